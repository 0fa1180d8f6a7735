"""The run's verdict: green only if no task failed and the cluster went back to zero.

Airflow decides a run's state from its leaf tasks, and teardowns do not count. A person who
marks a run failed sets its running tasks failed and its pending ones skipped, but leaves
pending teardowns to run (api/common/mark_tasks.py `_set_dag_run_terminal_state`); the
scheduler then decides the state from the leaves, and skipped counts as success. So the verdict
is a teardown (never skipped) with `on_failure_fail_dagrun`, the DAG's only leaf, which fails
if any task of the run failed or if scale_in did not succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

FAILED_STATES = ["failed", "upstream_failed"]


def check_run(context: Mapping[str, Any], *, scale_in_task_id: str = "scale_in") -> str:
    """Raise AirflowFailException unless the run is complete and scaled in; else a summary."""
    ti = context["ti"]
    failed = ti.get_ti_count(dag_id=ti.dag_id, run_ids=[ti.run_id], states=FAILED_STATES)
    scaled_in = ti.get_ti_count(
        dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=[scale_in_task_id], states=["success"]
    )
    problems = []
    if failed:
        problems.append(f"{failed} task(s) failed")
    if not scaled_in:
        problems.append(f"{scale_in_task_id} did not succeed: the cluster may not be at zero")
    if problems:
        raise AirflowFailException("The run failed: " + "; ".join(problems))
    return "every task succeeded and the cluster is back at zero"
