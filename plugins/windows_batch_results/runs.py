"""What the metadata database knows: the engine's DAGs (by their tags), and a run's record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PLAN_TASK_ID = "plan_tasks"
"""The task that plans the run and records where its results are (the engine's contract)."""
LOCATION_KEY = "results_location"
ENGINE_TAG = "windows-batch"
STUDY_TAG = "study:"
RESULTS_TAG = "results:"
RUNNING_STATES = frozenset({"queued", "running"})


@dataclass(frozen=True)
class StudyDag:
    """An engine DAG: its study and the study's own results prefix (from the DAG's tags)."""

    dag_id: str
    study: str
    results_prefix: str


@dataclass(frozen=True)
class RunRecord:
    """A run: its state and the location plan_tasks recorded (None before planning)."""

    dag_id: str
    run_id: str
    state: str
    location: Any

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


def study_dag(dag_id: str) -> StudyDag | None:
    """The DAG as an engine study's DAG (its tags say so), or None."""
    from airflow.models.dag import DagTag  # noqa: PLC0415
    from airflow.utils.session import create_session  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415

    with create_session() as session:
        tags = set(session.scalars(select(DagTag.name).where(DagTag.dag_id == dag_id)))
    if ENGINE_TAG not in tags:
        return None
    study = next((t[len(STUDY_TAG) :] for t in tags if t.startswith(STUDY_TAG)), "")
    prefix = next((t[len(RESULTS_TAG) :] for t in tags if t.startswith(RESULTS_TAG)), "")
    if not study or not prefix:
        return None
    return StudyDag(dag_id=dag_id, study=study, results_prefix=prefix)


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
                XComModel.key == LOCATION_KEY,
                XComModel.map_index == -1,
            )
        ).first()
        location = XComModel.deserialize_value(xcom) if xcom is not None else None
    return RunRecord(dag_id=dag_id, run_id=run_id, state=str(state), location=location)
