"""`make run` with the default study (200 tasks): wall time and where the time goes.

Runs scripts/run_local.py exactly as `make run` does (no CONF: 200 tasks, laptop bit budget)
on a free port, then reads the run's task instances from the local SQLite metadata database and
the kernel times from the task results, and splits the time:
- kernel: the Octave simulation loop: the run's bits at the kernel's CPU rate, measured here;
- bersim start-up: Python + numpy + oct2py + Octave start, the CPU time of a 1-bit task;
- Airflow: everything else a task costs (scheduling, task process, DAG parse, XCom, logs),
  in core-seconds per task: (simulate phase x cores - kernel - start-ups) / tasks, idle
  cores included (gaps between one task's end and the next one's start), and so is whatever
  else ran on the machine meanwhile.
Kernel and start-up are CPU seconds (user + sys of the child processes), not wall time: on a
shared machine wall time also counts waiting for a core, and would be charged twice.
Takes a few minutes; not part of `make test`.

    python -m benchmarks local_run
    python benchmarks/bench_local_run.py --parallelism N    # another LocalExecutor parallelism
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import local_airflow  # noqa: E402


def _child_cpu_s() -> float:
    """CPU seconds (user + sys) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bersim_costs(repeats: int = 5) -> tuple[float, float, float]:
    """(start-up CPU s, start-up wall s, kernel bit per CPU s) of `python -m bersim simulate`.

    Start-up: medians over 1-bit tasks. Kernel rate: a 50-million-bit task's bits over its
    CPU time beyond the start-up.
    """
    env = {**os.environ, "OCTAVE_EXECUTABLE": "octave-cli", "OCTAVE_HISTFILE": "/dev/null"}

    def simulate(max_bits: str, seed: int, output: str) -> tuple[float, float]:
        """Run one task; return its (CPU s, wall s)."""
        argv = ["--ebn0-db", "4", "--max-bits", max_bits, "--seed", str(seed), "--output", output]
        cpu_s, started = _child_cpu_s(), time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bersim", "simulate", *argv],
            env=env,
            check=True,
            capture_output=True,
        )
        return _child_cpu_s() - cpu_s, time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        small = [simulate("1", i, f"{tmp}/t{i}.json") for i in range(repeats)]
        large_cpu_s, _ = simulate("5e7", 1, f"{tmp}/rate.json")
        bits = int(json.loads(Path(f"{tmp}/rate.json").read_text())["bits"])
    startup_cpu_s = statistics.median(cpu for cpu, _ in small)
    startup_wall_s = statistics.median(wall for _, wall in small)
    return startup_cpu_s, startup_wall_s, bits / (large_cpu_s - startup_cpu_s)


def _ts(text: str | None) -> float:
    assert text is not None
    return datetime.fromisoformat(text.replace(" ", "T")).timestamp()


def task_instances(db: Path, run_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT task_id, map_index, state, start_date, end_date, duration "
            "FROM task_instance WHERE dag_id = ? AND run_id = ?",
            ("windows-batch-compute-dag", run_id),
        ).fetchall()
    return [dict(r) for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parallelism", type=int, default=None)
    args = parser.parse_args(argv if argv is not None else [])
    cores = os.cpu_count() or 1
    startup, startup_wall_s, rate = bersim_costs()
    print(
        f"bersim alone: start-up (python, numpy, oct2py, Octave; 1 bit) {startup:.2f} CPU s "
        f"median ({startup_wall_s:.2f} s wall), kernel {rate:.3g} bit per CPU s; {cores} cores"
    )

    port = local_airflow.free_port()
    command = [sys.executable, str(REPO / "scripts" / "run_local.py"), "--port", str(port)]
    if args.parallelism:
        command += ["--parallelism", str(args.parallelism)]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        print(f"  | {line}", end="", flush=True)
    code = proc.wait()
    total_s = time.monotonic() - started
    run_id = next(x.split()[-1] for x in lines if x.startswith("Triggered run "))
    env = local_airflow.airflow_env(port=port)
    tis = task_instances(Path(env["AIRFLOW_HOME"]) / "airflow.db", run_id)
    sims = [t for t in tis if t["task_id"] == "simulate"]
    first = min(_ts(t["start_date"]) for t in tis)
    last = max(_ts(t["end_date"]) for t in tis)
    phase = max(_ts(t["end_date"]) for t in sims) - min(_ts(t["start_date"]) for t in sims)
    n = len(sims)
    results_dir = (
        Path(env["AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT"])
        / "bersim-local"
        / "sim"
        / "task_results"
        / run_id
    )
    docs = [json.loads(p.read_text()) for p in sorted(results_dir.glob("task-*.json"))]
    bits = sum(int(d["bits"]) for d in docs)
    kernel = bits / rate
    kernel_clock = sum(float(d["elapsed_s"]) for d in docs)
    ti_total = sum(float(t["duration"] or 0) for t in sims)
    airflow_core_s = (phase * cores - kernel - n * startup) / n
    print()
    print(
        f"make run (default study): exit {code}, {total_s:.0f} s in all (Airflow start + run "
        f"+ stop); run {last - first:.0f} s from first to last task"
    )
    print(
        f"simulate: {n} tasks in {phase:.0f} s = {phase / n:.2f} s of wall per task, "
        f"{bits:.3g} bits simulated"
    )
    print(
        f"  kernel (Octave loop)     {kernel:7.0f} core-s  {kernel / n:5.2f} s/task"
        f"  (bits / rate; the kernels' clocks: {kernel_clock:.0f} s)"
    )
    print(f"  bersim start-up          {n * startup:7.0f} core-s  {startup:5.2f} s/task")
    print(
        f"  Airflow orchestration    {airflow_core_s * n:7.0f} core-s  {airflow_core_s:5.2f} "
        f"s/task  (= simulate phase x {cores} cores - the above)"
    )
    print(
        f"  task instance durations  {ti_total:7.0f} s in all, {ti_total / n:.2f} s mean "
        f"(wall, includes waiting for a core)"
    )
    # A lower bound from this run's own figures: no orchestration cost at all, one core.
    sequential = n * startup + kernel
    print(
        f"for comparison, the same tasks one at a time on one core, with no orchestration at "
        f"all, would need at least {sequential:.0f} s (= tasks x start-up + kernel): "
        f"{sequential / phase:.2f}x this run's simulate phase"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
