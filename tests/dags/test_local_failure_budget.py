"""The local backend honours the run's own failure budget (the form's max_failed_tasks), as
the ECS backend does (tests/dags/test_ecs_end_to_end.py): once more chunks failed than it
allows, the chunks not started yet are skipped, and the verdict fails the run."""

from __future__ import annotations

from collections import Counter

import pytest

from .conftest import DAG_ID, RunDag
from .ecs_harness import WORKLOADS

pytestmark = pytest.mark.airflow

SWEEP = "work"


def test_a_spent_failure_budget_skips_the_chunks_not_started(
    airflow_env: dict[str, str], run_dag: RunDag
) -> None:
    env = {
        **airflow_env,
        "WB_DAG_ID": DAG_ID,
        "AIRFLOW__WINDOWS_BATCH__STUDIES_DIR": str(WORKLOADS),
        "AIRFLOW__WINDOWS_BATCH__RETRIES": "1",
    }
    # Every chunk fails on its first item with the tiny study's final exit code (no retries);
    # dag.test runs the chunks one at a time, so two fail and two are never started.
    conf = {"Items": 8, "PerChunk": 2, "FailItems": "1,3,5,7", "FailCode": 3}
    outcome = run_dag(env, {**conf, "max_failed_tasks": "1"})
    tasks = outcome["tasks"]
    assert Counter(tasks[f"{SWEEP}[{i}]"] for i in range(4)) == {"failed": 2, "skipped": 2}
    assert outcome["state"] == "failed"
    assert (
        outcome["log"].count(
            f"the run's failure budget is spent: 2 {SWEEP} tasks failed, max_failed_tasks 1 "
            "allows 1 of 4; this task is not started"
        )
        == 2
    )
    assert f"2 {SWEEP} tasks were not started once the budget was spent" in outcome["log"]
