"""Fixtures for the Results view: a migrated Airflow metadata database and a real auth manager.

The app runs in-process under FastAPI's TestClient, mounted as the API server mounts it. Its
access check is Airflow's own (`requires_access_dag` with SimpleAuthManager, all-admins off), so
a test logs in with a JWT the auth manager signed, as the UI's `_token` cookie carries it. Runs
and their planned aggregate command are rows in a real SQLite metadata database (`airflow db
migrate` once per session, in a child process, like tests/dags).
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
for _path in (PLUGINS, REPO / "dags"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
DAG_ID = "windows-batch-compute-dag"


@dataclass(frozen=True)
class Airflow:
    """The in-process Airflow the tests talk to: its database and auth manager."""

    home: Path

    def add_run(self, run_id: str, *, state: str, aggregate_command: list[str] | None) -> None:
        """A run of the DAG; with the aggregate command plan_tasks pushes when it has planned.

        A run id that exists already is left as it is (the database lives for the session).
        """
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import insert, select

        with create_session() as session:
            if session.scalar(select(DagRun.id).where(DagRun.run_id == run_id)) is not None:
                return
            session.add(DagRun(dag_id=DAG_ID, run_id=run_id, run_type="manual", state=state))
            session.flush()
            if aggregate_command is None:
                return
            session.execute(
                insert(TaskInstance.__table__).values(
                    id=uuid.uuid4(),
                    dag_id=DAG_ID,
                    task_id="plan_tasks",
                    run_id=run_id,
                    map_index=-1,
                    pool="default_pool",
                    pool_slots=1,
                    state="success",
                )
            )
            XComModel.set(
                "aggregate_command",
                aggregate_command,
                dag_id=DAG_ID,
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
