"""aggregate: read the task results of one run, sum per Eb/N0, write CSV, JSON and PNG.

The input prefix is read one level deep: a sub-folder is never this run's (a later run whose
task prefix is `<this run's task prefix>/<this run id>` writes there). With `expected_tasks`
(what the plan always gives), only the names the plan made are read, `task-NNNNN.json` with
NNNNN < expected_tasks, and each must hold the index its name says; every other object is
skipped with a note. Without it (a hand-made folder), every `.json` object is read.

Every output is built in memory first; nothing is written unless every input is valid. A task
index claimed by two files is refused (never double-counted). Missing indexes are listed in the
outputs; the caller then exits 3.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bersim import result as result_mod
from bersim.errors import UsageError
from bersim.theory import CONFIDENCE, INTERVAL_METHOD, ber_bpsk_awgn, clopper_pearson

if TYPE_CHECKING:
    from bersim.result import TaskResult
    from bersim.storage import Location, Storage

CSV_COLUMNS = (
    "ebn0_db",
    "tasks",
    "bits",
    "errors",
    "ber",
    "ber_ci_low",
    "ber_ci_high",
    "ber_theory",
)
OUTPUT_NAMES = ("results.png", "results.csv", "results.json")
"""Written in this order: results.json last, so its presence means the set is complete."""
MAX_RESULT_BYTES = 1 << 20
"""A task result is about 1 KB; anything far larger under the prefix is not one."""
_MISSING_SHOWN = 20
_SKIPPED_SHOWN = 5
_TASK_NAME = re.compile(r"task-(\d{5,})\.json")


def task_file_name(index: int) -> str:
    """The name the plan gives task `index`'s result (dags/studies/bersim/plan.py)."""
    return f"task-{index:05d}.json"


def planned_index(name: str) -> int | None:
    """The task index a result's file name says, if it is a name the plan makes."""
    match = _TASK_NAME.fullmatch(name)
    if match is None:
        return None
    index = int(match.group(1))
    return index if task_file_name(index) == name else None


@dataclass(frozen=True)
class Row:
    """One Eb/N0 point: sums over its tasks, the BER, its 95 % interval and theory."""

    ebn0_db: float
    tasks: int
    bits: int
    errors: int
    ber: float
    ber_ci_low: float
    ber_ci_high: float
    ber_theory: float


@dataclass(frozen=True)
class Summary:
    """The whole study: rows sorted by Eb/N0, totals, and what is missing."""

    rows: list[Row]
    tasks: int
    bits: int
    errors: int
    expected_tasks: int | None
    missing_tasks: list[int]
    octave_versions: list[str]
    bersim_versions: list[str]


def summarise(
    results: list[tuple[str, TaskResult]], *, expected_tasks: int | None = None
) -> Summary:
    """Sum task results per Eb/N0; `results` pairs each result with where it came from.

    Raises UsageError for a duplicated task index, an index >= expected_tasks, or a result
    without an index when expected_tasks is given.
    """
    seen: dict[int, str] = {}
    for where, task in results:
        index = task.task_index
        if index is None:
            if expected_tasks is not None:
                raise UsageError(
                    f"{where}: has no task_index, but --expected-tasks {expected_tasks} was given"
                )
            continue
        if index in seen:
            raise UsageError(f"task {index} appears twice: {seen[index]} and {where}")
        if expected_tasks is not None and index >= expected_tasks:
            raise UsageError(
                f"{where}: task_index {index} is outside [0, {expected_tasks}) "
                f"given by --expected-tasks"
            )
        seen[index] = where

    groups: dict[float, list[TaskResult]] = defaultdict(list)
    for _, task in results:
        groups[task.ebn0_db].append(task)
    rows = []
    for ebn0_db in sorted(groups):
        tasks = groups[ebn0_db]
        bits = sum(t.bits for t in tasks)
        errors = sum(t.errors for t in tasks)
        low, high = clopper_pearson(errors, bits)
        rows.append(
            Row(
                ebn0_db=ebn0_db,
                tasks=len(tasks),
                bits=bits,
                errors=errors,
                ber=errors / bits,
                ber_ci_low=low,
                ber_ci_high=high,
                ber_theory=ber_bpsk_awgn(ebn0_db),
            )
        )
    missing = sorted(set(range(expected_tasks)) - set(seen)) if expected_tasks is not None else []

    def versions(key: str) -> list[str]:
        return sorted({str(t.provenance[key]) for _, t in results if key in t.provenance})

    return Summary(
        rows=rows,
        tasks=len(results),
        bits=sum(r.bits for r in rows),
        errors=sum(r.errors for r in rows),
        expected_tasks=expected_tasks,
        missing_tasks=missing,
        octave_versions=versions("octave_version"),
        bersim_versions=versions("bersim_version"),
    )


def to_csv(summary: Summary) -> bytes:
    """results.csv: one row per Eb/N0, columns CSV_COLUMNS, floats in round-trip form."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in summary.rows:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in asdict(row).values()])
    return buffer.getvalue().encode()


def to_json(summary: Summary, *, input_uri: str, output_uri: str) -> bytes:
    """results.json: the rows, totals, missing tasks and provenance."""
    document: dict[str, Any] = {
        "schema": result_mod.AGGREGATE_SCHEMA,
        "input": input_uri,
        "output": output_uri,
        "expected_tasks": summary.expected_tasks,
        "tasks": summary.tasks,
        "bits": summary.bits,
        "errors": summary.errors,
        "missing_tasks": summary.missing_tasks,
        "interval": {"method": INTERVAL_METHOD, "confidence": CONFIDENCE},
        "theory": "0.5*erfc(sqrt(10^(ebn0_db/10)))",
        "rows": [asdict(row) for row in summary.rows],
        "provenance": result_mod.provenance(
            task_octave_versions=summary.octave_versions,
            task_bersim_versions=summary.bersim_versions,
        ),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def load_results(
    storage: Storage, prefix: Location, *, expected_tasks: int | None = None
) -> list[tuple[str, TaskResult]]:
    """Read and validate the task results directly under `prefix` (see the module docstring).

    Raises UsageError when there is no task result, or one is corrupt, foreign, invalid or not
    the task its name says. Once all are valid, the objects and sub-folders it did not read are
    named in a note on stderr (a failure stays one line).
    """
    listing, folders = storage.list_folder(prefix)
    if expected_tasks is None:
        wanted = [(loc, size) for loc, size in listing if loc.name.endswith(".json")]
        what = "*.json"
    else:
        wanted = [
            (loc, size)
            for loc, size in listing
            if (index := planned_index(loc.name)) is not None and index < expected_tasks
        ]
        what = f"{task_file_name(0)} to {task_file_name(expected_tasks - 1)}"
    skipped = sorted({loc.name for loc, _ in listing} - {loc.name for loc, _ in wanted})
    if not wanted:
        extra = f" ({len(skipped)} other objects)" if skipped else ""
        raise UsageError(f"{prefix.label}: no task results ({what}) under this prefix{extra}")
    for loc, size in wanted:
        if size > MAX_RESULT_BYTES:
            raise UsageError(f"{loc}: {size} bytes is too large to be a bersim task result")
    results = []
    for loc, data in storage.read_many([loc for loc, _ in wanted]):
        task = result_mod.parse_task_result(data, where=loc.uri)
        index = planned_index(loc.name)
        if index is not None and task.task_index != index:
            raise UsageError(
                f"{loc}: holds task_index {task.task_index}, but its name says task {index}"
            )
        results.append((loc.uri, task))
    if skipped:
        _note(f"skipped {len(skipped)} objects under {prefix} that are not task results", skipped)
    if folders:
        _note(f"did not read {len(folders)} sub-folders of {prefix}", [f"{f}/" for f in folders])
    return results


def _note(message: str, names: list[str]) -> None:
    shown = ", ".join(names[:_SKIPPED_SHOWN]) + (", ..." if len(names) > _SKIPPED_SHOWN else "")
    print(f"bersim: note: {message}: {shown}", file=sys.stderr, flush=True)


def missing_message(summary: Summary) -> str:
    """One line naming how many and which expected task results are missing."""
    shown = ", ".join(str(i) for i in summary.missing_tasks[:_MISSING_SHOWN])
    more = len(summary.missing_tasks) - _MISSING_SHOWN
    suffix = f", ... ({more} more)" if more > 0 else ""
    return (
        f"{len(summary.missing_tasks)} of {summary.expected_tasks} expected task results "
        f"are missing: {shown}{suffix} (outputs written without them)"
    )


def run_aggregate(
    storage: Storage,
    *,
    input_prefix: Location,
    output_prefix: Location,
    expected_tasks: int | None = None,
) -> Summary:
    """Aggregate `input_prefix` into results.{png,csv,json} under `output_prefix`.

    Raises UsageError (nothing written) for bad input. Missing task results do not raise:
    they are in the outputs and in the returned summary's `missing_tasks`.
    """
    # Imported here: matplotlib costs about a second and only this command plots.
    from bersim.plot import figure_png  # noqa: PLC0415

    results = load_results(storage, input_prefix, expected_tasks=expected_tasks)
    summary = summarise(results, expected_tasks=expected_tasks)
    outputs = {
        "results.png": figure_png(summary),
        "results.csv": to_csv(summary),
        "results.json": to_json(summary, input_uri=input_prefix.uri, output_uri=output_prefix.uri),
    }
    for name in OUTPUT_NAMES:
        storage.write_bytes(output_prefix.child(name), outputs[name])
    return summary
