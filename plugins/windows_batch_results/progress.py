"""A run's progress from the task runner's records, counted without reading per-item detail.

The runner (docker/base/wbrun) records a finished chunk as `chunks/done/<n>-<items>.json` under
the run's engine prefix (the name carries its work items) and a failed try as
`chunks/failed/<n>.json`. One listing of each folder counts a 10,000-item run: at most
`[core] max_map_length` names, a page or two of ListObjectsV2. Per-item detail (each item's
status, exit code, time) stays in the records: the items.csv download reads them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from windows_batch_results.locate import S3Prefix
from windows_batch_results.store import ResultsStore

LISTING_LIMIT = 100_000
FAILED_READ = 100


@dataclass(frozen=True)
class Progress:
    """Counts of a run's work items and chunks (tasks)."""

    items_done: int
    items_failed: int
    chunks_done: int
    failed_chunks: tuple[int, ...]
    aggregated: bool

    @property
    def chunks_failed(self) -> int:
        return len(self.failed_chunks)


def count(store: ResultsStore, engine: S3Prefix) -> Progress:
    """Two listings: finished chunks (with their work items), failed chunks."""

    def names(folder: str) -> list[str]:
        prefix = S3Prefix.parse(engine.uri + folder)
        return [name for name, _ in store.list(prefix, limit=LISTING_LIMIT, recursive=False).files]

    return tally(
        names("chunks/done/"),
        names("chunks/failed/"),
        lambda numbers: store.read_many(engine, [failed_key(n) for n in numbers]),
    )


def failed_key(chunk: int) -> str:
    """The runner's record of a failed try (docker/base/wbrun/runner.py failed_record)."""
    return f"chunks/failed/{chunk:05d}.json"


def tally(
    done_names: Iterable[str],
    failed_names: Iterable[str],
    read_failed: Callable[[list[int]], Sequence[bytes | None]],
) -> Progress:
    """Count a run's progress from the names of its chunk records (`chunks/done/`,
    `chunks/failed/`); read_failed(chunks) reads those failed chunks' records, in order. The
    Results view and the run note (dags/windows_batch/manifest.py) both count with this."""
    items = 0
    done: set[int] = set()
    aggregated = False
    for name in done_names:
        stem = name.removesuffix(".json")
        if stem == "aggregate":
            aggregated = True
            continue
        number, _, work = stem.partition("-")
        if number.isdigit() and work.isdigit():
            done.add(int(number))
            items += int(work)
    failed = sorted(
        int(stem)
        for stem in (name.removesuffix(".json") for name in failed_names)
        if stem.isdigit() and int(stem) not in done
    )
    # The failed chunks' records say how many of their items failed (a few reads: a run with
    # more failed chunks than FAILED_READ counts the rest as one failed item each).
    failed_items = 0
    for data in read_failed(failed[:FAILED_READ]):
        try:
            record = json.loads(data or b"")
            failed_items += int(record.get("failed", 1))
            items += int(record.get("done", 0))
        except (ValueError, AttributeError, TypeError):
            failed_items += 1
    failed_items += max(len(failed) - FAILED_READ, 0)
    return Progress(
        items_done=items,
        items_failed=failed_items,
        chunks_done=len(done),
        failed_chunks=tuple(failed),
        aggregated=aggregated,
    )


def items_csv(store: ResultsStore, engine: S3Prefix) -> str:
    """One row per work item record of every chunk's last record (done or failed)."""
    listing = {
        "done": store.list(S3Prefix.parse(engine.uri + "chunks/done/"), limit=LISTING_LIMIT),
        "failed": store.list(S3Prefix.parse(engine.uri + "chunks/failed/"), limit=LISTING_LIMIT),
    }
    names = [f"chunks/{kind}/{name}" for kind, found in listing.items() for name, _ in found.files]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["chunk", "item", "work_items", "status", "exit_code", "elapsed_s", "outputs"])
    seen: set[object] = set()
    for data in store.read_many(engine, names):
        try:
            record = json.loads(data or b"")
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("chunk") in seen:
            continue
        seen.add(record.get("chunk"))
        for item in record.get("items") or []:
            if isinstance(item, dict):
                writer.writerow(
                    [
                        _cell(record.get("chunk")),
                        _cell(item.get("index")),
                        _cell(item.get("count")),
                        _cell(item.get("status")),
                        _cell(item.get("exit_code")),
                        _cell(item.get("elapsed_s")),
                        _cell(item.get("outputs")),
                    ]
                )
    return out.getvalue()


def _cell(value: object) -> str:
    """Numbers and plain words only: a record is written by the study's container."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return repr(value)
    text = str(value or "")
    return text if text.isalnum() else ""
