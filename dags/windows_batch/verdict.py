"""The run's verdict: green only if no task failed beyond the run's budget and the cluster was
released (back to zero, or left to another study's run that still uses it).

Airflow decides a run's state from its leaf tasks, and teardowns do not count. A person who
marks a run failed sets its running tasks failed and its pending ones skipped, but leaves
pending teardowns to run (api/common/mark_tasks.py `_set_dag_run_terminal_state`); the
scheduler then decides the state from the leaves, and skipped counts as success. So the verdict
is a teardown (never skipped) with `on_failure_fail_dagrun`, the DAG's only leaf, which fails
if any task of the run failed (beyond the failure budget of the fan-out) or if scale_in did not
succeed. It names the failed tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from windows_batch.catalog import FailureBudget

FAILED_STATES = ["failed", "upstream_failed"]
SHOWN = 20


def check_run(
    context: Mapping[str, Any],
    *,
    sweep_task_id: str,
    budget: FailureBudget | None,
    chunks: int,
    scale_in_task_id: str = "scale_in",
) -> str:
    """Raise AirflowFailException unless the run passes (see the module docstring); a summary."""
    ti = context["ti"]
    failed_total = ti.get_ti_count(dag_id=ti.dag_id, run_ids=[ti.run_id], states=FAILED_STATES)
    sweep_failed = ti.get_ti_count(
        dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=[sweep_task_id], states=FAILED_STATES
    )
    skipped = ti.get_ti_count(
        dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=[sweep_task_id], states=["skipped"]
    )
    scaled_in = ti.get_ti_count(
        dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=[scale_in_task_id], states=["success"]
    )
    names = _failed_names(ti, sweep_task_id)
    shown = ", ".join(names[:SHOWN]) + (
        f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    )
    problems = []
    allowed = budget.allowed(chunks) if budget is not None else 0
    other_failed = failed_total - sweep_failed
    if other_failed or sweep_failed > allowed:
        what = f"{failed_total} task(s) failed"
        if budget is not None:
            what += (
                f" ({sweep_failed} of {chunks} {sweep_task_id} tasks; the budget "
                f"max_failed_tasks {budget.text()} allows {allowed})"
            )
        problems.append(what + (f": {shown}" if shown else ""))
    if skipped and budget is not None and sweep_failed > allowed:
        problems.append(
            f"{skipped} {sweep_task_id} tasks were not started once the budget was spent"
        )
    if not scaled_in:
        problems.append(f"{scale_in_task_id} did not succeed: the cluster may not be at zero")
    if problems:
        raise AirflowFailException("The run failed: " + "; ".join(problems))
    if sweep_failed:
        return (
            f"green within its failure budget: {sweep_failed} of {chunks} {sweep_task_id} tasks "
            f"failed (max_failed_tasks {budget.text() if budget else 0}): {shown}; the cluster "
            "was released"
        )
    return "every task succeeded and the cluster was released"


def _failed_names(ti: Any, sweep_task_id: str) -> list[str]:
    """`task[3]` for each failed task instance of the run (from the Task SDK's states)."""
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
    except Exception:  # naming them is a convenience; the counts decide
        return []
    found: list[tuple[str, int]] = []
    for task_key, state in (states.get(ti.run_id) or {}).items():
        if state not in FAILED_STATES:
            continue
        # The execution API names a mapped task instance `<task id>_<map index>`; only the
        # fan-out is mapped.
        key = str(task_key)
        index = key.removeprefix(sweep_task_id + "_")
        found.append((sweep_task_id, int(index)) if index != key and index.isdigit() else (key, -1))
    return [name if index < 0 else f"{name}[{index}]" for name, index in sorted(found)]
