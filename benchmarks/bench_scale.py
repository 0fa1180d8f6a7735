"""How the engine's own costs grow with the work items of a run: 200, 2,000, 10,000 (100,000 for
planning), on this machine, with a trivial item so that only the engine is measured.

A job template of N items (an INT task parameter, one command per item: `true`), planned and
run the way the local backend runs it, without Airflow around it (bench_local_run measures
Airflow's own cost per task):
- plan: planning.plan_run as plan_tasks calls it: the form, the template expanded by
  openjd-model, the chunks, the manifest written (header, chunks.jsonl, one line per chunk);
- run: the task runner (`python -m wbrun run`, as the local operator and the ECS container
  start it) over CHUNKS chunks, one after the other: per item it stages, runs the command and
  writes its record, per chunk it starts Python and writes the chunk record;
- view: what the Results view reads for the run's page (progress: two listings; the outputs
  listing) and for items.csv (every chunk record), from the records the runner wrote.
Each figure is also given per item and as a ratio to the 200-item run (1.00 = the engine's
cost grows in proportion to the items; below 1: a fixed cost is shared by more items).

    python -m benchmarks scale
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "dags", REPO / "plugins"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from windows_batch import catalog, planning  # noqa: E402
from windows_batch import settings as settings_mod  # noqa: E402
from windows_batch.dag_factory import load_study  # noqa: E402
from windows_batch.runs import ChunkRef  # noqa: E402
from windows_batch_results import app as results_app  # noqa: E402
from windows_batch_results import locate, progress  # noqa: E402
from windows_batch_results.store import LocalStore  # noqa: E402

SIZES = (200, 2_000, 10_000)
PLAN_SIZES = (*SIZES, 100_000)
CHUNKS = 20
RUN = "manual__2026-12-07T00:00:00+00:00"
TEMPLATE = """\
specificationVersion: jobtemplate-2023-09
name: Trivial items
parameterDefinitions:
- name: Items
  type: INT
  default: 10
  minValue: 1
  maxValue: 100000
steps:
- name: Each
  parameterSpace:
    taskParameterDefinitions:
    - name: Item
      type: INT
      range: "1-{{Param.Items}}"
  script:
    actions:
      onRun:
        command: "true"
"""


def _study_dir(root: Path) -> Path:
    folder = root / "studies" / "trivial"
    folder.mkdir(parents=True)
    (folder / "template.yaml").write_text(TEMPLATE)
    (folder / "study.yaml").write_text("expected_item_s: 0.01\nmemory_mib: 512\n")
    return folder


def _settings(root: Path, *, max_map_length: int) -> settings_mod.Settings:
    return settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__BACKEND": "local",
            "AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT": str(root / "buckets"),
            "AIRFLOW__WINDOWS_BATCH__CACHE_DIR": str(root / "cache"),
            "AIRFLOW__WINDOWS_BATCH__MAX_MAP_LENGTH": str(max_map_length),
        }
    )


def _plan(
    folder: Path, settings: settings_mod.Settings, items: int, run_id: str
) -> planning.Planned:
    study = load_study(catalog.study_info(folder), settings)
    params = {k: v.value for k, v in study.form(settings).items()}
    params["Items"] = items
    return planning.plan_run(
        study, settings, params=params, conf={"Items": items}, run_id=run_id, write=True
    )


def _timed(action: Callable[[], Any], repeats: int = 1) -> float:
    """Median wall seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _run_chunks(planned: planning.Planned, settings: settings_mod.Settings) -> float:
    """Wall seconds of the runner over every chunk, one process per chunk."""
    env = {**os.environ, "WB_LOCAL_ROOT": str(settings.local_root)}
    manifest_uri = planned.context.engine_uri + "manifest/"
    started = time.perf_counter()
    for ref in planned.refs:
        subprocess.run(
            [sys.executable, "-m", "wbrun", *ChunkRef.parse(ref.to_json()).command(manifest_uri)],
            env=env,
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - started


def _view_s(planned: planning.Planned, settings: settings_mod.Settings) -> tuple[float, float]:
    """(page, items.csv) seconds of the Results view's reads for this run (median of 5)."""
    store = LocalStore(root=settings.local_root)
    where = locate.ResultsLocation(
        outputs=locate.S3Prefix.parse(planned.plan.outputs_uri),
        engine=locate.S3Prefix.parse(planned.context.engine_uri),
        chunks=len(planned.refs),
        work_items=planned.plan.work_items,
    )
    view = results_app._view(store, where)
    assert view["progress"].items_done == planned.plan.work_items, view["progress"]
    page = _timed(lambda: results_app._view(store, where), repeats=5)
    rows = progress.items_csv(store, where.engine).count("\n") - 1
    assert rows == planned.plan.work_items, rows
    csv_s = _timed(lambda: progress.items_csv(store, where.engine), repeats=5)
    return page, csv_s


def main() -> None:
    spawn = _timed(lambda: [subprocess.run(["true"], check=True) for _ in range(200)]) / 200
    print(f"one trivial item: {spawn * 1000:.1f} ms to start and end `true` alone")
    print(f"{'items':>7} {'plan':>9} {'per item':>9} {'ratio':>6}   (plan_tasks; map length 1024)")
    base: float | None = None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        folder = _study_dir(root)
        settings = _settings(root, max_map_length=1024)
        _plan(folder, settings, 10, "warm-up")  # the template's validation cached, as after a parse
        for n in PLAN_SIZES:
            planned = _plan(folder, settings, n, f"plan-{n}")
            seconds = _timed(partial(_plan, folder, settings, n, f"plan-{n}"), repeats=3)
            per = seconds / n
            base = base or per
            print(
                f"{n:>7} {seconds * 1000:7.0f} ms {per * 1e6:6.0f} us {per / base:6.2f}"
                f"   {len(planned.refs)} chunks"
            )

        print(
            f"\n{'items':>7} {'run':>8} {'per item':>9} {'ratio':>6} {'page':>8} {'ratio':>6} "
            f"{'items.csv':>10} {'ratio':>6}   (runner over {CHUNKS} chunks; Results view reads)"
        )
        first: dict[str, float] = {}
        for n in SIZES:
            settings = _settings(root / f"run-{n}", max_map_length=CHUNKS)
            planned = _plan(folder, settings, n, RUN)
            assert len(planned.refs) == CHUNKS, len(planned.refs)
            run_s = _run_chunks(planned, settings)
            page_s, csv_s = _view_s(planned, settings)
            figures = {"run": run_s / n, "page": page_s, "csv": csv_s / n}
            first = first or figures
            print(
                f"{n:>7} {run_s:6.1f} s {figures['run'] * 1000:6.2f} ms "
                f"{figures['run'] / first['run']:6.2f} {page_s * 1000:6.1f} ms "
                f"{page_s / first['page']:6.2f} {csv_s * 1000:8.1f} ms "
                f"{figures['csv'] / first['csv']:6.2f}"
            )
    print(
        "ratios: run and items.csv per item, the page per run (its reads are two listings and "
        "the outputs' listing, so it should stay flat as items grow)"
    )


if __name__ == "__main__":
    main()
