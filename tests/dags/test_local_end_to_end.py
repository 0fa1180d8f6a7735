"""The local backend end to end: real Airflow (dag.test), the task runner, the study's command.

The BER study with real bersim and GNU Octave (it must behave as it always has), and the
engine's tiny test workloads (tests/workloads) for what the engine itself does: chunks, the
failure budget, retries that never redo a finished item, one task per input file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from bersim.theory import ber_bpsk_awgn, clopper_pearson

from .conftest import WORKLOADS, RunDag

pytestmark = pytest.mark.airflow

BER = "windows-batch-compute-dag"
"""The BER study's DAG (dags/studies/bersim), what these runs with Octave test."""
STUDY = {
    "s3_bucket": "e2e-results",
    "num_tasks": 6,
    "ebn0_db": [0, 2, 4, 6],
    "max_bits_per_task": 400_000,
    "target_errors": 300,
    "allocation": "adaptive",
    "seed": 11,
}


def run_dir(env: dict[str, str], bucket: str, prefix: str, run_id: str) -> Path:
    return Path(env["AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT"]) / bucket / prefix / run_id


@pytest.mark.octave
def test_small_study_produces_a_plot_and_a_table_that_agree_with_theory(
    airflow_env: dict[str, str], run_dag: RunDag
) -> None:
    outcome = run_dag(airflow_env, STUDY, dag_id=BER)
    assert outcome["state"] == "success", outcome["log"][-4000:]
    sims = [k for k in outcome["tasks"] if k.startswith("simulate[")]
    assert len(sims) == STUDY["num_tasks"]
    assert set(outcome["tasks"].values()) == {"success"}

    run_id = outcome["run_id"]
    tasks_dir = run_dir(airflow_env, "e2e-results", "sim/task_results", run_id)
    assert sorted(p.name for p in tasks_dir.iterdir()) == [f"task-{i:05d}.json" for i in range(6)]
    out = run_dir(airflow_env, "e2e-results", "sim/aggregate_results", run_id)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["ebn0_db"]) for r in rows] == [0, 2, 4, 6]
    for row in rows:
        bits, errors = int(row["bits"]), int(row["errors"])
        low, high = clopper_pearson(errors, bits, confidence=0.999)
        assert low <= ber_bpsk_awgn(float(row["ebn0_db"])) <= high, row
        assert errors >= 300 * 0.9  # each point counted (about) its target
    # The results link and the summary the run carries.
    assert (
        outcome["xcom"]["aggregate._link_ResultsLink"] == (out / "results.png").resolve().as_uri()
    )
    assert outcome["xcom"]["aggregate.return_value"].startswith("4 Eb/N0 points, ")
    # cluster_size auto (the default): plan_tasks estimated, chose 1 instance (6 short tasks
    # fill 1.5 instances; a second one would not save a quarter of the time), scale_out used it.
    estimate = outcome["xcom"]["plan_tasks.cost_estimate"]
    assert estimate.startswith("cluster_size auto -> 1 (cheapest within 1.25x of the fastest")
    assert "estimate: 1 instance, about " in estimate
    assert estimate in outcome["log"]
    assert outcome["xcom"]["plan_tasks.cluster_size"] == 1
    assert "Auto Scaling group 'windows-batch' to 1 and wait" in outcome["log"]
    assert outcome["xcom"]["aggregate.note_results"].startswith("**Results:** [results.png](")
    assert outcome["xcom"]["scale_in.note_progress"].startswith("6 of 6 work items done, 0 failed")


@pytest.mark.octave
def test_failed_simulations_fail_the_run_but_still_yield_a_partial_study(
    airflow_env: dict[str, str], run_dag: RunDag
) -> None:
    logical_date = "2026-01-01T00:00:00+00:00"
    run_id = f"manual__{logical_date}"
    conf: dict[str, Any] = {**STUDY, "s3_bucket": "e2e-partial", "num_tasks": 4}
    # A folder where task 1's result must go: bersim cannot write it and fails for real.
    blocker = run_dir(airflow_env, "e2e-partial", "sim/task_results", run_id) / "task-00001.json"
    blocker.mkdir(parents=True)
    outcome = run_dag(airflow_env, conf, logical_date=logical_date, dag_id=BER)
    assert outcome["run_id"] == run_id
    assert outcome["state"] == "failed"
    assert outcome["tasks"]["simulate[1]"] == "failed"
    assert [outcome["tasks"][f"simulate[{i}]"] for i in (0, 2, 3)] == ["success"] * 3
    assert outcome["tasks"]["aggregate"] == "failed"  # bersim aggregate exit 3
    assert outcome["tasks"]["scale_in"] == "success"  # the teardown ran anyway
    out = run_dir(airflow_env, "e2e-partial", "sim/aggregate_results", run_id)
    assert (out / "results.png").exists()
    document = json.loads((out / "results.json").read_text())
    assert document["missing_tasks"] == [1]
    assert "MISSING" in outcome["log"]  # the summary logged for the partial study


TINY = "tiny"
"""The engine's tiny test workload (tests/workloads/studies/tiny)."""


def test_a_spent_failure_budget_stops_the_tasks_not_started_and_fails_the_run(
    workload_env: dict[str, str], run_dag: RunDag
) -> None:
    env = {**workload_env, "AIRFLOW__WINDOWS_BATCH__RETRIES": "0"}
    # Every item fails: whatever order the chunks run in, the first two fail (one more than
    # the budget) and the other two are not started.
    conf = {"Items": 8, "PerChunk": 2, "FailItems": "1,2,3,4,5,6,7,8", "max_failed_tasks": "1"}
    outcome = run_dag(env, conf, dag_id=TINY)
    assert outcome["state"] == "failed"
    tasks = outcome["tasks"]
    states = sorted(tasks[f"work[{i}]"] for i in range(4))
    assert states == ["failed", "failed", "skipped", "skipped"]
    assert "the run's failure budget is spent: 2 work tasks failed" in outcome["log"]
    assert tasks["scale_in"] == "success"
    assert "The run failed: 2 task(s) failed" in outcome["log"]
    assert "2 work tasks were not started once the budget was spent" in outcome["log"]


def test_a_retried_chunk_does_not_redo_the_items_it_finished(
    workload_env: dict[str, str], run_dag: RunDag, tmp_path: Path
) -> None:
    """Past a map length of 2 the engine puts 3 items in each chunk; item 2's first run fails,
    so chunk 0 fails after item 1 finished. Its retry skips item 1 and runs item 2 again."""
    env = {
        **workload_env,
        "AIRFLOW__CORE__MAX_MAP_LENGTH": "2",
        "AIRFLOW__WINDOWS_BATCH__RETRIES": "1",
    }
    runs = tmp_path / "runs"
    outcome = run_dag(env, {"Items": 6, "FailOnce": "2", "Runs": str(runs)}, dag_id="items")
    assert outcome["state"] == "success", outcome["log"][-3000:]
    assert sorted(k for k in outcome["tasks"] if k.startswith("each[")) == ["each[0]", "each[1]"]
    assert outcome["tries"]["each[0]"] == 2
    counts = {int(p.name.split("-")[1]): int(p.read_text()) for p in runs.iterdir()}
    assert counts == {1: 1, 2: 2, 3: 1, 4: 1, 5: 1, 6: 1}
    assert "item 0 already done: skipped" in outcome["log"]
    assert "6 of 6 work items done, 0 failed" in outcome["xcom"]["scale_in.note_progress"]


def test_one_task_per_input_file(workload_env: dict[str, str], run_dag: RunDag) -> None:
    outcome = run_dag(workload_env, {}, dag_id="perfile")
    assert outcome["state"] == "success", outcome["log"][-3000:]
    assert sorted(k for k in outcome["tasks"] if k.startswith("convert[")) == [
        "convert[0]",
        "convert[1]",
        "convert[2]",
    ]
    location = json.loads(outcome["xcom"]["plan_tasks.results_location"])
    out = (
        Path(workload_env["AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT"])
        / location["outputs"][len("s3://") :]
        / "Out"
    )
    assert sorted(p.name for p in out.iterdir()) == ["s1.txt.upper", "s2.txt.upper", "s3.txt.upper"]
    source = (WORKLOADS / "perfile" / "samples" / "s2.txt").read_text()
    assert (out / "s2.txt.upper").read_text() == source.upper()
