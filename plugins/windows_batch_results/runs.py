"""What the metadata database knows about a run: does it exist, its state, its planned results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PLAN_TASK_ID = "plan_tasks"
"""The task that plans the run and pushes the aggregate command (the DAG's contract)."""
AGGREGATE_COMMAND_KEY = "aggregate_command"
RUNNING_STATES = frozenset({"queued", "running"})


@dataclass(frozen=True)
class RunRecord:
    """A run of the DAG: its state and the aggregate command it planned (None before planning)."""

    dag_id: str
    run_id: str
    state: str
    aggregate_command: Any

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


def find_run(*, dag_id: str, run_id: str) -> RunRecord | None:
    """The run `run_id` of `dag_id` from Airflow's metadata database, or None if there is none."""
    from airflow.models.dagrun import DagRun  # noqa: PLC0415
    from airflow.models.xcom import XComModel  # noqa: PLC0415
    from airflow.utils.session import create_session  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415

    with create_session() as session:
        state = session.scalar(
            select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
        if state is None:
            return None
        xcom = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == PLAN_TASK_ID,
                XComModel.key == AGGREGATE_COMMAND_KEY,
                XComModel.map_index == -1,
            )
        ).first()
        command = XComModel.deserialize_value(xcom) if xcom is not None else None
    return RunRecord(dag_id=dag_id, run_id=run_id, state=str(state), aggregate_command=command)
