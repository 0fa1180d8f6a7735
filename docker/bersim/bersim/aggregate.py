"""aggregate: read every task result under a prefix, sum per Eb/N0, write CSV, JSON and PNG.

Every output is built in memory first; nothing is written unless every input is valid. A task
index claimed by two files is refused (never double-counted). With `expected_tasks`, indexes
outside [0, expected_tasks) are refused and missing indexes are listed in the outputs; the caller
then exits 3.
"""

from __future__ import annotations

import csv
import io
import json
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


def load_results(storage: Storage, prefix: Location) -> list[tuple[str, TaskResult]]:
    """Read and validate every `.json` object under `prefix`.

    Other objects (e.g. logs) are skipped with a note on stderr. Raises UsageError when the
    prefix holds no JSON object or one of them is corrupt, foreign or invalid.
    """
    listing = storage.list_objects(prefix)
    wanted = [(loc, size) for loc, size in listing if loc.key.endswith(".json")]
    skipped = len(listing) - len(wanted)
    if not wanted:
        extra = f" ({skipped} other objects)" if skipped else ""
        raise UsageError(f"{prefix.label}: no task results (*.json) under this prefix{extra}")
    if skipped:
        print(f"bersim: note: skipped {skipped} non-JSON objects under {prefix}", file=sys.stderr)
    for loc, size in wanted:
        if size > MAX_RESULT_BYTES:
            raise UsageError(f"{loc}: {size} bytes is too large to be a bersim task result")
    return [
        (loc.uri, result_mod.parse_task_result(data, where=loc.uri))
        for loc, data in storage.read_many([loc for loc, _ in wanted])
    ]


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

    results = load_results(storage, input_prefix)
    summary = summarise(results, expected_tasks=expected_tasks)
    outputs = {
        "results.png": figure_png(summary),
        "results.csv": to_csv(summary),
        "results.json": to_json(summary, input_uri=input_prefix.uri, output_uri=output_prefix.uri),
    }
    for name in OUTPUT_NAMES:
        storage.write_bytes(output_prefix.child(name), outputs[name])
    return summary
