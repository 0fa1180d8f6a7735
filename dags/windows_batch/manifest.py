"""The run's manifest: every item's command line, in S3 (locally, the local bucket), by chunk.

Nothing that grows with the run goes through argv, XCom or ECS container overrides (which ECS
caps at 8,192 characters): plan_tasks writes the work here once, and each chunk's ECS task reads
only its own line by byte range (`wbrun run --chunk N --at OFFSET:LENGTH --sha DIGEST`). The
fan-out's XCom holds one small reference per chunk (at most `[core] max_map_length` of them).

Layout under the run's engine prefix (`<results prefix>/_engine/<run id>/`):
    manifest/header.json     schema, run, study, steps (embedded files, PATHs, bundle)
    manifest/chunks.jsonl    one line per chunk: {"chunk": n, "step": task id, "items": [...]}
    manifest/aggregate.json  the aggregate step's item (when the study has one)
    bundle/                  the study's folder, when its PATHs name bundle files (ECS only)
    items/, chunks/          the task runner's records of what it finished (docker/base/wbrun)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from windows_batch.study import Item, Plan, RunContext, StudyError, spec_digest

if TYPE_CHECKING:
    from pathlib import Path

    from windows_batch.objects import Objects
    from windows_batch_results.progress import Progress

SCHEMA = "windows-batch.manifest/1"
CHUNK_RECORD_SCHEMA = "windows-batch.chunk/1"


@dataclass(frozen=True)
class ChunkRef:
    """What one mapped task instance of the fan-out gets: its chunk, where its line is."""

    chunk: int
    offset: int
    length: int
    sha: str
    items: int
    expected_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk,
            "at": f"{self.offset}:{self.length}",
            "sha": self.sha,
            "items": self.items,
            "expected_s": round(self.expected_s, 3),
        }


def chunk_size(
    *,
    items: int,
    max_chunks: int,
    item_s: float = 0.0,
    target_s: float = 0.0,
    slots: int = 1,
) -> int:
    """Items per chunk: at least enough to stay within `max_chunks` chunks; with a target
    runtime, about target_s / item_s, but no fewer chunks than the cluster has slots."""
    size = max(1, math.ceil(items / max(max_chunks, 1)))
    if target_s > 0 and item_s > 0:
        by_target = max(1, int(target_s // item_s))
        fill = max(1, math.ceil(items / max(slots, 1)))
        size = max(size, min(by_target, fill))
    return size


def group(items: Sequence[Item], size: int) -> list[list[Item]]:
    """Consecutive items in chunks of `size` (the last one shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def check_chunks(chunks: Sequence[Sequence[Item]], *, max_chunks: int, field: str) -> None:
    """Refuse a plan Airflow could not map (more task instances than `max_map_length`)."""
    if len(chunks) > max_chunks:
        raise StudyError(
            field,
            f"{len(chunks)} chunks need {len(chunks)} Airflow task instances, more than "
            f"[core] max_map_length ({max_chunks}) allows: make chunks bigger (OpenJD: raise "
            "the CHUNK[INT] parameter's defaultTaskCount; or fewer tasks)",
        )


def write(
    objects: Objects,
    *,
    plan: Plan,
    chunks: Sequence[Sequence[Item]],
    context: RunContext,
    study_name: str,
    bundle_uri: str,
) -> list[ChunkRef]:
    """Write the manifest under the run's engine prefix; one reference per chunk."""
    prefix = context.engine_uri + "manifest/"
    steps: dict[str, Any] = {plan.sweep.task_id: _step(plan.sweep.to_json(), bundle_uri)}
    if plan.aggregate_step is not None:
        steps[plan.aggregate_step.task_id] = _step(plan.aggregate_step.to_json(), bundle_uri)
    refs: list[ChunkRef] = []
    lines: list[bytes] = []
    offset = 0
    for number, chunk in enumerate(chunks):
        entry = {"chunk": number, "step": plan.sweep.task_id, "items": [i.to_json() for i in chunk]}
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        refs.append(
            ChunkRef(
                chunk=number,
                offset=offset,
                length=len(line) - 1,
                sha=spec_digest(entry),
                items=sum(i.count for i in chunk),
                expected_s=sum(i.expected_s for i in chunk),
            )
        )
        lines.append(line)
        offset += len(line)
    header = {
        "schema": SCHEMA,
        "run_id": context.run_id,
        "study": study_name,
        "engine_uri": context.engine_uri,
        "outputs_uri": plan.outputs_uri,
        "steps": steps,
        "chunks": len(chunks),
        "items": sum(len(c) for c in chunks),
        "work_items": plan.work_items,
    }
    objects.write(prefix + "chunks.jsonl", b"".join(lines), content_type="application/x-ndjson")
    if plan.aggregate is not None and plan.aggregate_step is not None:
        write_aggregate(objects, plan=plan, context=context)
    objects.write(prefix + "header.json", json.dumps(header, indent=1).encode())
    return refs


def write_aggregate(objects: Objects, *, plan: Plan, context: RunContext) -> None:
    """The aggregate step's entry (also rewritten from the re-checked form before it runs)."""
    assert plan.aggregate is not None
    assert plan.aggregate_step is not None
    entry = {
        "chunk": "aggregate",
        "step": plan.aggregate_step.task_id,
        "items": [plan.aggregate.to_json()],
    }
    objects.write(context.engine_uri + "manifest/aggregate.json", json.dumps(entry).encode())


def _step(data: Mapping[str, Any], bundle_uri: str) -> dict[str, Any]:
    step = dict(data)
    if step.get("bundle"):
        step["bundle_uri"] = bundle_uri
    return step


def stage_bundle(objects: Objects, *, plan: Plan, folder: Path, context: RunContext) -> str:
    """Where the study's bundle is for the task runner: its folder locally; on AWS a copy
    under the run's engine prefix (uploaded once per run, when a step uses it)."""
    steps = [plan.sweep] + ([plan.aggregate_step] if plan.aggregate_step else [])
    # One task per file of a bundle folder: each item stages its file from the copy.
    copied = bundle_uri(context)
    per_file = any(i.uri.startswith(copied) for item in plan.items for i in item.inputs)
    if not (per_file or any(step.bundle for step in steps)):
        return ""
    if objects.local:
        return str(folder.resolve())
    from windows_batch.templates import BUNDLE_MAX_BYTES  # noqa: PLC0415

    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if size > BUNDLE_MAX_BYTES:
        raise StudyError(
            plan.sweep.task_id,
            f"the study's folder holds {size / 2**20:.0f} MiB; a bundle travels with every run "
            f"and may hold at most {BUNDLE_MAX_BYTES // 2**20} MiB: put data in S3 and pass it "
            "as an IN parameter",
        )
    uri = bundle_uri(context)
    objects.upload_tree(folder, uri)
    return uri


def bundle_uri(context: RunContext) -> str:
    """Where the run's copy of the study's bundle is on AWS (stage_bundle uploads it there)."""
    return context.engine_uri + "bundle/"


def done_key(chunk: int, work_items: int) -> str:
    """The task runner's record of a finished chunk (docker/base/wbrun/runner.py done_record)."""
    return f"chunks/done/{chunk:05d}-{work_items}.json"


def progress(objects: Objects, engine_uri: str) -> Progress:
    """Count a run's progress from two listings, as the Results view counts it: finished
    chunks carry their work items in their record's name, failed ones are read (a few) for how
    many of their items failed."""
    from windows_batch_results.progress import failed_key, tally  # noqa: PLC0415

    def names(folder: str) -> list[str]:
        return [name for name, _ in objects.list(engine_uri + folder, recursive=False)]

    return tally(
        names("chunks/done/"),
        names("chunks/failed/"),
        lambda chunks: objects.read_many(engine_uri + failed_key(n) for n in chunks),
    )
