"""Fixtures for the Results view: a migrated Airflow metadata database and a real auth manager.

The app runs in-process under FastAPI's TestClient, mounted as the API server mounts it. Its
access check is Airflow's own (`requires_access_dag` with SimpleAuthManager, all-admins off), so
a test logs in with a JWT the auth manager signed, as the UI's `_token` cookie carries it. The
study DAGs (with the tags the engine gives them), their runs and the results location plan_tasks
records are rows in a real SQLite metadata database (`airflow db migrate` once per session, in a
child process, like tests/dags).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
for _path in (PLUGINS, REPO / "dags"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
DAG_ID = "windows-batch-compute-dag"
STUDY = "bersim"
PREFIX = "sim"


@dataclass(frozen=True)
class Airflow:
    """The in-process Airflow the tests talk to: its database and auth manager."""

    home: Path

    def add_dag(
        self, dag_id: str = DAG_ID, *, study: str = STUDY, prefix: str = PREFIX, engine: bool = True
    ) -> None:
        """A DAG as the engine tags it (windows-batch, study:<name>, results:<prefix>)."""
        from airflow.models.dag import DagModel, DagTag
        from airflow.models.dagbundle import DagBundleModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            if session.scalar(select(DagModel.dag_id).where(DagModel.dag_id == dag_id)):
                return
            if not session.scalar(
                select(DagBundleModel.name).where(DagBundleModel.name == "tests")
            ):
                session.add(DagBundleModel(name="tests"))
                session.flush()
            session.add(
                DagModel(
                    dag_id=dag_id,
                    bundle_name="tests",
                    max_active_tasks=16,
                    max_consecutive_failed_dag_runs=0,
                    has_task_concurrency_limits=False,
                )
            )
            session.flush()
            tags = [f"study:{study}", f"results:{prefix}"] + (["windows-batch"] if engine else [])
            for tag in tags:
                session.add(DagTag(name=tag, dag_id=dag_id))

    def add_run(
        self, run_id: str, *, state: str, location: dict[str, Any] | None, dag_id: str = DAG_ID
    ) -> None:
        """A run of the DAG; with the results location plan_tasks records when it has planned.

        A run id that exists already is left as it is (the database lives for the session).
        """
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import insert, select

        with create_session() as session:
            if session.scalar(
                select(DagRun.id).where(DagRun.run_id == run_id, DagRun.dag_id == dag_id)
            ):
                return
            session.add(DagRun(dag_id=dag_id, run_id=run_id, run_type="manual", state=state))
            session.flush()
            if location is None:
                return
            session.execute(
                insert(TaskInstance.__table__).values(
                    id=uuid.uuid4(),
                    dag_id=dag_id,
                    task_id="plan_tasks",
                    run_id=run_id,
                    map_index=-1,
                    pool="default_pool",
                    pool_slots=1,
                    state="success",
                )
            )
            XComModel.set(
                "results_location",
                json.dumps(location),
                dag_id=dag_id,
                task_id="plan_tasks",
                run_id=run_id,
                session=session,
            )

    def token(self, *, role: str | None) -> str:
        """A JWT for a user with this SimpleAuthManager role (None: a user with no role)."""
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        user = SimpleAuthManagerUser(username=f"user-{role}", role=role)
        return str(get_auth_manager().generate_jwt(user))


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> Iterator[Airflow]:
    """A migrated SQLite metadata database and SimpleAuthManager, configured in this process."""
    home = tmp_path_factory.mktemp("plugin-airflow")
    # The session's migrated database (tests/conftest.py): migrate() below then has nothing to do.
    home.mkdir(parents=True, exist_ok=True)
    for name in ("airflow.db", ".migrated"):
        shutil.copy2(migrated_db / name, home / name)
    import local_airflow

    env = local_airflow.airflow_env(home=home, port=local_airflow.free_port(), local_root=home)
    local_airflow.migrate(env)

    from airflow import settings
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.configuration import conf

    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    overrides = {
        ("database", "sql_alchemy_conn"): url,
        ("core", "auth_manager"): env["AIRFLOW__CORE__AUTH_MANAGER"],
        ("core", "simple_auth_manager_all_admins"): "False",
        ("core", "simple_auth_manager_users"): "viewer:viewer",
        ("core", "simple_auth_manager_passwords_file"): str(home / "passwords.json"),
        ("api_auth", "jwt_secret"): "results-view-tests-" + "0" * 64,
    }
    saved = {key: conf.get(*key, fallback=None) for key in overrides}
    for (section, key), value in overrides.items():
        conf.set(section, key, value)
    saved_conn = settings.SQL_ALCHEMY_CONN
    settings.SQL_ALCHEMY_CONN = url
    settings.configure_orm()
    init_auth_manager()
    try:
        yield Airflow(home=home)
    finally:
        for (section, key), value in saved.items():
            if value is None:
                conf.remove_option(section, key)
            else:
                conf.set(section, key, value)
        settings.SQL_ALCHEMY_CONN = saved_conn
        settings.dispose_orm()
