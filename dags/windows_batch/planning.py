"""plan_tasks: check the form, plan the run, write its manifest, size the cluster.

Nothing starts on AWS before this has passed: every refusal names the field it is about.
Besides the study's own checks, the engine refuses a run that
- has more chunks than Airflow can map (`[core] max_map_length`, as deployed);
- has a chunk whose expected time exceeds the try's deadline (TASK_TIMEOUT_S): each try would
  hit the deadline;
- asks for more CPU or memory per task than an instance of the group registers;
- (local backend) runs a command this machine does not have.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from windows_batch import capacity, cost_report, manifest
from windows_batch.engine_form import EngineValues, check_engine_values, check_unknown
from windows_batch.objects import Objects
from windows_batch.runs import RESULTS_KEY, context_for
from windows_batch.study import TOKEN_RE, Item, Plan, RunContext, StudyError

if TYPE_CHECKING:
    from windows_batch.settings import Settings
    from windows_batch.study import Study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Planned:
    """A planned run: the study's plan, the chunks, their references, the engine's values."""

    plan: Plan
    context: RunContext
    engine: EngineValues
    chunks: list[list[Item]]
    refs: list[manifest.ChunkRef]
    slots: int


def plan_run(
    study: Study,
    settings: Settings,
    *,
    params: Mapping[str, Any],
    conf: Mapping[str, Any] | None,
    run_id: str,
    objects: Objects | None = None,
    write: bool = True,
) -> Planned:
    """Check and plan one run (see the module docstring); write its manifest when `write`."""
    form = study.form(settings)
    check_unknown(conf, form)
    engine = check_engine_values(params, settings=settings, names=form)
    info = study.info
    too_big = capacity.check_fits(settings, cpu=info.cpu, memory_mib=info.memory_mib)
    if too_big:
        raise StudyError("memory_mib" if "MiB" in too_big else "cpu", f"study.yaml: {too_big}")
    context = context_for(info, settings, params, run_id)
    store = objects or Objects(settings)
    plan = study.plan(
        params,
        conf=conf,
        context=context,
        settings=settings,
        **({"list_files": _lister(store, context, settings)} if info.for_each_file else {}),
    )
    if not plan.items:
        raise StudyError(plan.sweep.task_id, "the plan has no work items")
    check_inputs(plan, context, settings)
    if plan.work_items > settings.max_items:
        raise StudyError(
            plan.time_field or plan.sweep.task_id,
            f"{plan.work_items} work items; a run may have at most {settings.max_items} "
            "(setting MAX_ITEMS)",
        )
    slots = capacity.slots_for(settings, cpu=info.cpu, memory_mib=info.memory_mib)
    chunks = _chunks(plan, settings, slots=slots)
    manifest.check_chunks(
        chunks, max_chunks=settings.max_map_length, field=plan.time_field or plan.sweep.task_id
    )
    _check_deadline(plan, chunks, settings)
    if settings.local:
        _check_runnable(plan)
    refs: list[manifest.ChunkRef] = []
    if write:
        bundle = manifest.stage_bundle(store, plan=plan, folder=info.folder, context=context)
        refs = manifest.write(
            store,
            plan=plan,
            chunks=chunks,
            context=context,
            study_name=info.name,
            bundle_uri=bundle,
        )
    return Planned(plan=plan, context=context, engine=engine, chunks=chunks, refs=refs, slots=slots)


def _chunks(plan: Plan, settings: Settings, *, slots: int) -> list[list[Item]]:
    if plan.chunking.fixed:
        return [[item] for item in plan.items]
    size = plan.chunking.items_per_chunk or manifest.chunk_size(
        items=len(plan.items),
        max_chunks=settings.max_map_length,
        item_s=sum(i.expected_s for i in plan.items) / len(plan.items),
        target_s=plan.chunking.target_s,
        slots=settings.max_cluster_size * slots,
    )
    return manifest.group(plan.items, size)


def chunk_seconds(chunk: Sequence[Item], settings: Settings) -> float:
    """A chunk's expected time on one slot: its items one after the other, plus the start."""
    return settings.cost.task_start_s + sum(item.expected_s for item in chunk)


def _check_deadline(plan: Plan, chunks: Sequence[Sequence[Item]], settings: Settings) -> None:
    longest = max(chunks, key=lambda c: chunk_seconds(c, settings))
    expected = chunk_seconds(longest, settings)
    if expected > settings.task_timeout_s:
        what = "task" if len(longest) == 1 else f"chunk of {len(longest)} items"
        raise StudyError(
            plan.time_field or plan.sweep.task_id,
            f"the longest {what} is expected to run {expected:,.0f} s, more than the deadline "
            f"of each try (TASK_TIMEOUT_S={settings.task_timeout_s} s): every try would be "
            "stopped at it; plan shorter tasks",
        )


def _check_runnable(plan: Plan) -> None:
    """Local backend: the study's commands must exist here (a Windows-only one says so)."""
    items = list(plan.items[:1]) + ([plan.aggregate] if plan.aggregate else [])
    for item in items:
        program = item.argv[0]
        if TOKEN_RE.search(program):
            continue  # an embedded file or a staged path: it exists once staged
        if shutil.which(program) is None:
            raise StudyError(
                plan.sweep.task_id,
                f"this study's command {program!r} cannot run on this machine (it is not on "
                "PATH); the local backend runs the study's command as written. Run it on the "
                "ECS backend, or give the template a command this machine has",
            )


def _lister(objects: Objects, context: RunContext, settings: Settings) -> Any:
    """list_files for one-task-per-file studies: the files under an input folder, as URIs."""

    def list_files(uri: str) -> list[str]:
        if uri.startswith("s3://"):
            own = f"s3://{context.bucket}/{context.results_prefix}/"
            if not settings.local and not uri.startswith(own):
                raise StudyError(
                    "input",
                    f"{uri} is outside {own}: on AWS the study's tasks may read only their own "
                    "prefix; upload the inputs there (e.g. under inputs/)",
                )
            return [uri.rstrip("/") + "/" + name for name, _ in objects.list(uri)]
        from pathlib import Path  # noqa: PLC0415

        root = Path(uri)
        return [str(p) for p in sorted(root.rglob("*")) if p.is_file()] if root.is_dir() else []

    return list_files


def check_inputs(plan: Plan, context: RunContext, settings: Settings) -> None:
    """On AWS, every input must lie under the study's own prefix (all its task role reads)."""
    if settings.local:
        return
    own = f"s3://{context.bucket}/{context.results_prefix}/"
    steps = [plan.sweep] + ([plan.aggregate_step] if plan.aggregate_step else [])
    for step in steps:
        for spec in step.paths:
            if spec.uri and spec.flow in ("IN", "INOUT") and not spec.uri.startswith(own):
                raise StudyError(
                    spec.name,
                    f"{spec.uri} is outside {own}: the study's tasks may read only their own "
                    "prefix on AWS; upload the input there (e.g. under inputs/)",
                )


def results_location(planned: Planned) -> dict[str, Any]:
    """What the Results view needs (checked there against the study's own prefix)."""
    plan = planned.plan
    return {
        "bucket": planned.context.bucket,
        "outputs": plan.outputs_uri,
        "engine": planned.context.engine_uri,
        "progress": plan.progress_uri,
        "chunks": len(planned.chunks),
        "work_items": plan.work_items,
        "published": list(plan.published),
    }


def push_results(ti: Any, planned: Planned, settings: Settings, *, requested: int | str) -> Any:
    """Log the plan and the estimate; push what the rest of the run reads from plan_tasks."""
    plan = planned.plan
    task_s = [chunk_seconds(c, settings) for c in planned.chunks]
    sizing = cost_report.plan_estimate(
        settings, task_s=task_s, requested=requested, slots=planned.slots
    )
    print(f"{plan.summary}; cluster of {sizing.size}", flush=True)
    print(
        f"{len(planned.chunks)} chunks ({plan.work_items} work items), "
        f"{planned.slots} per instance; manifest under {planned.context.engine_uri}",
        flush=True,
    )
    print(sizing.line(), flush=True)
    ti.xcom_push(key=cost_report.CLUSTER_SIZE_KEY, value=sizing.size)
    ti.xcom_push(key=cost_report.ESTIMATE_KEY, value=sizing.line())
    ti.xcom_push(key=RESULTS_KEY, value=json.dumps(results_location(planned)))
    return sizing
