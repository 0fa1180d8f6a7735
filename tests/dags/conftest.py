"""Shared set-up for the DAG's tests.

Anything that runs Airflow proper (parsing with settings, dag.test) runs in a child process with
its own AIRFLOW_HOME and environment: each test picks its backend and settings, and nothing
leaks between tests. The pure modules (the studies' plans and forms, engine_form, results) are
imported in-process.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable

# plugins/: the DAG imports its trigger from there, as Airflow puts that folder on sys.path.
for path in (DAGS, REPO / "plugins", REPO / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
# In-process imports of airflow.sdk must not create ~/airflow.
if "AIRFLOW_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="wb-airflow-home-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["AIRFLOW_HOME"] = _home
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import local_airflow  # noqa: E402

from . import ecs_harness  # noqa: E402
from .ecs_harness import EcsDeployment  # noqa: E402


def last_json_line(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise AssertionError(f"no JSON outcome in the output:\n{stdout[-3000:]}")


def migrated_home(template: Path, home: Path) -> Path:
    """A fresh Airflow home with a copy of the migrated database (saves a `db migrate`).

    `template` is the session's `migrated_db` (tests/conftest.py).
    """
    home.mkdir(parents=True, exist_ok=True)
    for name in ("airflow.db", ".migrated"):
        shutil.copy2(template / name, home / name)
    return home


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> dict[str, str]:
    """An environment for a real Airflow (SQLite, migrated once) with the local backend."""
    home = migrated_home(migrated_db, tmp_path_factory.mktemp("airflow-home"))
    env = local_airflow.airflow_env(
        home=home, port=local_airflow.free_port(), local_root=home / "buckets"
    )
    # dag.test() has no API server: the run note is skipped (logged), not sent anywhere.
    env.pop("AIRFLOW__API__BASE_URL", None)
    env["AIRFLOW__WINDOWS_BATCH__RETRY_DELAY_S"] = "0"
    local_airflow.migrate(env)
    return env


RunDag = Callable[..., dict[str, Any]]
DAG_ID = "tiny"
"""The DAG the ECS end-to-end tests run: the engine's tiny test workload (tests/workloads/)."""
STUDY: dict[str, Any] = {
    "Items": 6,
    "PerChunk": 2,
    "cluster_size": 2,
    "scale_out_timeout_s": 120,
    "scale_in_timeout_s": 120,
}
"""Its form: 6 work items in 3 chunks of 2 (3 ECS tasks), then the combine step."""
WORKLOADS = REPO / "tests" / "workloads" / "studies"


@pytest.fixture(scope="session")
def workload_env(airflow_env: dict[str, str]) -> dict[str, str]:
    """airflow_env with the engine's tiny test studies (tests/workloads) as the deployment's."""
    return {**airflow_env, "AIRFLOW__WINDOWS_BATCH__STUDIES_DIR": str(WORKLOADS)}


STANDALONE_MAX_PARALLEL_TASKS = 2


@pytest.fixture
def run_dag() -> RunDag:
    """Run the DAG once with dag.test() in a child process; return its JSON outcome."""

    def run(
        env: dict[str, str],
        conf: dict[str, Any],
        *,
        logical_date: str | None = None,
        timeout_s: float = 300,
        dag_id: str | None = None,
    ) -> dict[str, Any]:
        """dag_id: the DAG to run; by default the env's WB_DAG_ID, else DAG_ID."""
        proc = subprocess.run(
            [PYTHON, str(HERE / "dagtest_runner.py"), json.dumps(conf)]
            + ([logical_date] if logical_date else []),
            env={**env, "WB_DAG_ID": dag_id or env.get("WB_DAG_ID") or DAG_ID},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"dag.test runner failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
            )
        outcome = last_json_line(proc.stdout)
        outcome["log"] = proc.stdout + proc.stderr
        return outcome

    return run


@pytest.fixture
def ecs_deployment(tmp_path: Path) -> Iterator[Callable[..., EcsDeployment]]:
    """Factory: our stacks in a fresh moto ECS server (ecs_harness.py), stopped after the test.

    Its keywords go to ecs_harness.moto_ecs: `server`, `studies_dir` and MOTO_* settings."""
    with ExitStack() as stack:

        def start(
            *, ecs_parameters: dict[str, str] | None = None, **server_env: Any
        ) -> EcsDeployment:
            return stack.enter_context(
                ecs_harness.moto_ecs(tmp_path / "moto", ecs_parameters=ecs_parameters, **server_env)
            )

        yield start


@dataclass
class EcsAirflow:
    """`airflow standalone` (LocalExecutor, real scheduler and triggerer) on the ECS deployment."""

    url: str
    home: Path
    env: dict[str, str]
    deployment: EcsDeployment

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return local_airflow.request(self.url, method, path, body)

    def trigger(self, conf: dict[str, Any], *, dag_id: str = DAG_ID) -> str:
        """Start a run of the DAG with `conf`; return its run id."""
        status, body = self.api(
            "POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}
        )
        assert status == 200, body
        return str(body["dag_run_id"])

    def task_instances(self, run_id: str, *, dag_id: str = DAG_ID) -> dict[str, dict[str, Any]]:
        """The run's task instances by `task_id` or `task_id[map_index]`."""
        status, body = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        assert status == 200, body
        return {
            (ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"): ti
            for ti in body["task_instances"]
        }

    def report(self, run_id: str, *, dag_id: str = DAG_ID) -> str:
        """The run's task states and the end of each task log: what a failed assertion shows."""
        lines = [
            f"{key}: {ti['state']} (try {ti['try_number']})"
            for key, ti in sorted(self.task_instances(run_id, dag_id=dag_id).items())
        ]
        lines += [f"scheduler: {line}" for line in self.state_mismatches(run_id)]
        for path in sorted((self.home / "logs").rglob("*.log")):
            if run_id in str(path):
                lines += [f"--- {path.relative_to(self.home)}", local_airflow.tail(path, 25)]
        return "\n".join(lines)

    def state_mismatches(self, run_id: str) -> list[str]:
        """The scheduler's "state mismatch" errors for the run: tries it failed itself because
        an executor report came after the try had resumed (DEFER_SETTLE_S, deadline.py)."""
        log = self.home / "standalone.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [
            line
            for line in text.splitlines()
            if "but the task instance's state attribute is" in line and run_id in line
        ]

    def wait_for_run(
        self, run_id: str, *, dag_id: str = DAG_ID, timeout_s: float = 180
    ) -> dict[str, Any]:
        """Poll until the run has finished; return it."""

        def finished() -> dict[str, Any] | None:
            status, run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            assert status == 200, run
            return run if run["state"] in {"success", "failed"} else None

        run = dict(
            self.deployment.wait_for(f"run {run_id} to finish", finished, timeout_s=timeout_s)
        )
        # No try of the run was failed by the scheduler for a report it read too late.
        assert self.state_mismatches(run_id) == [], self.report(run_id)
        return run


STANDALONE_SETTINGS = {
    "AIRFLOW__WINDOWS_BATCH__WAITER_DELAY_S": "1",
    "AIRFLOW__WINDOWS_BATCH__SCALE_POKE_INTERVAL_S": "1",
    "AIRFLOW__WINDOWS_BATCH__CAPACITY_RETRY_S": "1",
    "AIRFLOW__WINDOWS_BATCH__TASK_TIMEOUT_S": "300",
    "AIRFLOW__WINDOWS_BATCH__RETRIES": "1",
    "AIRFLOW__WINDOWS_BATCH__RETRY_DELAY_S": "3",
    "AIRFLOW__WINDOWS_BATCH__MAX_PARALLEL_TASKS": str(STANDALONE_MAX_PARALLEL_TASKS),
    "AIRFLOW__WINDOWS_BATCH__RUN_NOTE": "api",
}


@contextmanager
def standalone_on_ecs(
    tmp: Path,
    migrated_db: Path,
    *,
    settings: dict[str, str] | None = None,
    **server_env: str,
) -> Iterator[EcsAirflow]:
    """`airflow standalone` running the DAG on a fresh moto ECS deployment; both stopped after.

    The DAG gets mwaa.yaml's settings and the execution role's credentials (ecs_harness.py),
    then STANDALONE_SETTINGS and `settings` (AIRFLOW__* overrides); `server_env` goes to the
    moto server (e.g. MOTO_CONTAINER_STOP_TIMEOUT_S). The run note goes through this Airflow's
    own REST API.
    """
    with ecs_harness.moto_ecs(tmp / "moto", **server_env) as deployment:
        home = migrated_home(migrated_db, tmp / "home")
        base = local_airflow.airflow_env(
            home=home, port=local_airflow.free_port(), local_root=tmp / "buckets", parallelism=3
        )
        env = {**deployment.airflow_env(base), **STANDALONE_SETTINGS, **(settings or {})}
        local_airflow.migrate(env)
        with local_airflow.standalone(env, timeout_s=180) as url:
            airflow = EcsAirflow(url=url, home=home, env=env, deployment=deployment)
            deployment.wait_for(
                "the DAG to be parsed",
                lambda: airflow.api("GET", f"dags/{DAG_ID}")[0] == 200,
                timeout_s=120,
            )
            yield airflow


@pytest.fixture(scope="module")
def ecs_airflow(
    tmp_path_factory: pytest.TempPathFactory, migrated_db: Path
) -> Iterator[EcsAirflow]:
    """A real Airflow on the moto ECS deployment (standalone_on_ecs), shared by a module.

    Chunks are capped at 2 at once per run (MAX_PARALLEL_TASKS) on a cluster with room for more.
    """
    with standalone_on_ecs(tmp_path_factory.mktemp("ecs-airflow"), migrated_db) as airflow:
        yield airflow
