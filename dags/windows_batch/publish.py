"""After the aggregate step: the Results link, the study's summary and the run note.

Where the outputs are is recomputed from the run's form (runs.context_for) and the manifest
plan_tasks wrote there, never taken from XCom. The study's summary runs in a try: a study whose
files cannot be summarized never fails the engine's step (the summary is a convenience).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from windows_batch import notes
from windows_batch.objects import Objects
from windows_batch.results import (
    ResultsLink,
    note_text,
    results_link,
    results_view_path,
)
from windows_batch.runs import context_for, params_of

if TYPE_CHECKING:
    from airflow.sdk import BaseOperatorLink

    from windows_batch.settings import Settings
    from windows_batch.study import Study

log = logging.getLogger(__name__)

PLOT_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")
_LIST_LIMIT = 2000


def outputs_uri(settings: Settings, study: Study, context: Mapping[str, Any]) -> str | None:
    """The run's outputs folder, from the manifest under the run's (recomputed) prefix."""
    run = context_for(study.info, settings, params_of(context), str(context["run_id"]))
    data = Objects(settings).read(run.engine_uri + "manifest/header.json")
    try:
        header = json.loads(data or b"")
    except ValueError:
        return None
    uri = header.get("outputs_uri") if isinstance(header, dict) else None
    if not isinstance(uri, str) or not uri.startswith(f"s3://{run.bucket}/{run.results_prefix}/"):
        log.warning("The manifest names no outputs folder under the study's prefix")
        return None
    return uri


class PublishMixin:
    """For the aggregate operators: set `study` and `settings`, call `publish` after the run."""

    operator_extra_links: Collection[BaseOperatorLink] = (ResultsLink(),)
    study: Study
    settings: Settings
    task_id: str
    results_url: str = ""

    def publish(self, context: Mapping[str, Any], *, partial: bool) -> str | None:
        """Log the link and the summary, set the run note; return the summary."""
        try:
            outputs = outputs_uri(self.settings, self.study, context)
        except Exception as exc:  # the results are published already; the note is a convenience
            log.warning("Could not find the run's outputs: %s", exc)
            return None
        if outputs is None:
            return None
        objects = Objects(self.settings)

        def read(name: str) -> bytes | None:
            return objects.read(outputs.rstrip("/") + "/" + name.lstrip("/"))

        try:
            summary = self.study.summarize(read)
        except Exception as exc:  # a study's summary never fails the engine's step
            log.warning("The study could not summarize its results: %s", exc)
            summary = None
        try:
            names = [name for name, _ in objects.list(outputs)[:_LIST_LIMIT]]
        except Exception as exc:
            log.warning("Could not list the run's outputs: %s", exc)
            names = []
        plot = next((n for n in names if n.lower().endswith(PLOT_SUFFIXES)), None)
        target = outputs + plot if plot else outputs
        self.results_url = results_link(
            target,
            backend=self.settings.backend,
            local_root=self.settings.local_root,
            region=self.settings.region,
        )
        run_id = str(context["run_id"])
        dag_id = str(context["dag"].dag_id)
        view = results_view_path(dag_id=dag_id, run_id=run_id)
        log.info("Results: %s", self.results_url)
        log.info("Results view: <Airflow UI>/%s", view)
        if summary:
            log.info("Summary: %s", summary)
        location = str(objects.path(target)) if self.settings.local else target
        label = plot.rsplit("/", 1)[-1] if plot else f"{len(names)} output files"
        note = note_text(
            link=view, location=location, summary=summary, partial=partial, label=label
        )
        notes.update(
            self.settings,
            context,
            aggregate_task_id=self.task_id,
            part=notes.RESULTS_PART,
            text=note,
        )
        return summary


def progress_line(settings: Settings, study: Study, context: Mapping[str, Any]) -> str | None:
    """`48 of 50 work items done, 2 failed (chunks 3, 7), 0 pending`, from the runner's records."""
    from windows_batch import manifest  # noqa: PLC0415

    ti = context["ti"]
    try:
        run = context_for(study.info, settings, params_of(context), str(context["run_id"]))
        found = manifest.progress(Objects(settings), run.engine_uri)
    except Exception as exc:  # the note is a convenience, never fatal
        log.warning("Could not count the run's progress: %s", exc)
        return None
    planned = ti.xcom_pull(task_ids="plan_tasks", key="results_location")
    try:
        location = json.loads(planned) if isinstance(planned, str) else {}
    except ValueError:
        location = {}
    total = int(location.get("work_items", 0) or 0)
    chunks = int(location.get("chunks", 0) or 0)
    pending = max(total - found.items_done - found.items_failed, 0)
    line = (
        f"{found.items_done} of {total} work items done, {found.items_failed} failed, "
        f"{pending} pending ({found.chunks_done} of {chunks} tasks done"
    )
    if found.failed_chunks:
        shown = ", ".join(str(c) for c in found.failed_chunks[:10])
        more = " ..." if len(found.failed_chunks) > 10 else ""
        line += f"; failed: {study.sweep_task_id}[{shown}{more}]"
    return line + ")"


def scale_in_done(settings: Settings, study: Study) -> Any:
    """scale_in's `on_done`: the progress and the cluster's cost in the run note."""

    def done(context: Mapping[str, Any], cost_line: str | None) -> None:
        progress = progress_line(settings, study, context)
        ti = context["ti"]
        if cost_line:
            ti.xcom_push(key=notes.COST_PART, value=cost_line)
        if progress and study.aggregate_task_id is None:
            view = results_view_path(dag_id=str(ti.dag_id), run_id=str(ti.run_id))
            progress = f"**Results:** [outputs]({view})\n\n{progress}"
        notes.update(
            settings,
            context,
            aggregate_task_id=study.aggregate_task_id,
            part=notes.PROGRESS_PART if progress else None,
            text=progress,
        )

    return done
