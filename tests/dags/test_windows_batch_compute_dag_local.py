"""The local backend end to end: real Airflow (dag.test), real bersim, real GNU Octave."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from bersim.theory import ber_bpsk_awgn, clopper_pearson

from .conftest import RunDag

pytestmark = pytest.mark.airflow

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
    outcome = run_dag(airflow_env, STUDY)
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
        outcome["xcom"]["aggregate._link_ResultsPlotLink"]
        == (out / "results.png").resolve().as_uri()
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
    assert outcome["xcom"]["aggregate.run_note"].endswith(f"\n\n{estimate}")


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
    outcome = run_dag(airflow_env, conf, logical_date=logical_date)
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


def test_input_only_plan_tasks_can_check_fails_the_run_before_any_work(
    airflow_env: dict[str, str], run_dag: RunDag
) -> None:
    outcome = run_dag(airflow_env, {"num_tasks": 2, "ebn0_db": [0, 2, 4], "s3_bucket": "e2e-never"})
    assert outcome["state"] == "failed"
    assert outcome["tasks"]["plan_tasks"] == "failed"
    assert outcome["tasks"]["scale_out"] == "upstream_failed"
    assert outcome["tasks"]["aggregate"] == "upstream_failed"
    assert "ebn0_db: 3 Eb/N0 points need at least 3 tasks, but num_tasks is 2" in outcome["log"]
    assert not (Path(airflow_env["AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT"]) / "e2e-never").exists()


def test_the_schema_refuses_bad_input_before_a_run_exists(
    airflow_env: dict[str, str], run_dag: RunDag
) -> None:
    outcome = run_dag(airflow_env, {"num_tasks": -3})
    assert "Invalid input for param num_tasks" in outcome["error"]
