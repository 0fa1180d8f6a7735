"""DAG integrity: parses without errors and without the network, has the agreed shape.

Each parse runs in a child process (tests/dags/parse_check.py) with the backend's settings.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from windows_batch import settings as settings_mod
from windows_batch.params import PARAM_NAMES

from .conftest import HERE, PYTHON, last_json_line

ECS_ENV = {
    "AIRFLOW__WINDOWS_BATCH__BACKEND": "ecs",
    "AIRFLOW__WINDOWS_BATCH__CLUSTER_NAME": "c1",
    "AIRFLOW__WINDOWS_BATCH__ASG_NAME": "g1",
    "AIRFLOW__WINDOWS_BATCH__TASK_DEFINITION": "td1",
    "AIRFLOW__WINDOWS_BATCH__CONTAINER_NAME": "bersim",
    "AIRFLOW__WINDOWS_BATCH__LOG_GROUP": "/ecs/x/bersim",
    "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "my-results",
    "AIRFLOW__WINDOWS_BATCH__SLOTS_PER_INSTANCE": "3",
    "AIRFLOW__WINDOWS_BATCH__MAX_CLUSTER_SIZE": "5",
    "AIRFLOW__WINDOWS_BATCH__RETRIES": "2",
}
LOCAL_ENV = {"AIRFLOW__WINDOWS_BATCH__BACKEND": "local"}


def parse(extra: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__WINDOWS_BATCH__")}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **extra})
    # No AWS connection or credentials at all: a parse-time AWS call could not even sign.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AIRFLOW_CONN_AWS_DEFAULT"):
        env.pop(key, None)
    proc = subprocess.run(
        [PYTHON, str(HERE / "parse_check.py")], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return last_json_line(proc.stdout)


@pytest.fixture(scope="module")
def ecs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return parse(ECS_ENV, tmp_path_factory.mktemp("ecs"))


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return parse(LOCAL_ENV, tmp_path_factory.mktemp("local"))


@pytest.mark.parametrize("backend", ["ecs", "local"])
def test_parses_without_errors_and_without_network(
    backend: str, ecs: dict[str, Any], local: dict[str, Any]
) -> None:
    result = ecs if backend == "ecs" else local
    assert result["import_errors"] == {}
    assert result["network_attempts"] == []
    assert result["dag_id"] == "windows-batch-compute-dag"


@pytest.mark.parametrize("backend", ["ecs", "local"])
def test_graph_trigger_rules_and_teardown(
    backend: str, ecs: dict[str, Any], local: dict[str, Any]
) -> None:
    tasks = (ecs if backend == "ecs" else local)["tasks"]
    assert set(tasks) == {
        "plan_tasks",
        "scale_out",
        "simulate",
        "aggregate",
        "scale_in",
        "finish",
    }
    assert tasks["scale_out"]["upstream"] == ["plan_tasks"]
    assert tasks["simulate"]["upstream"] == ["plan_tasks", "scale_out"]
    assert tasks["aggregate"]["upstream"] == ["plan_tasks", "simulate"]
    assert tasks["scale_in"]["upstream"] == ["aggregate", "scale_out"]
    assert tasks["simulate"]["type"] == "MappedOperator"
    assert tasks["aggregate"]["trigger_rule"] == "all_done"
    assert tasks["scale_in"]["trigger_rule"] == "all_done"
    # The verdict: runs whatever happened (a teardown is not skipped when the run is marked
    # failed) and decides the run's state (on_failure_fail_dagrun).
    assert tasks["finish"]["upstream"] == ["scale_in"]
    assert tasks["finish"]["trigger_rule"] == "all_done"
    assert tasks["finish"]["is_teardown"]
    assert tasks["finish"]["on_failure_fail_dagrun"]
    assert tasks["scale_in"]["is_teardown"]
    # Would make scale_in a leaf whose success turns a failed study green.
    assert not tasks["scale_in"]["on_failure_fail_dagrun"]
    assert tasks["scale_out"]["is_setup"]
    assert not tasks["aggregate"]["is_teardown"]  # a failed aggregate fails the run
    assert tasks["plan_tasks"]["retries"] == 0
    assert tasks["aggregate"]["extra_links"] == ["Results plot (results.png)"]


def test_dag_settings(ecs: dict[str, Any]) -> None:
    assert ecs["tags"] == ["bersim", "ecs", "windows-batch"]
    assert ecs["catchup"] is False
    assert ecs["max_active_runs"] == 1
    assert ecs["default_retries"] == 2
    assert "Trigger DAG w/ config" in ecs["doc_md"]
    assert tuple(ecs["params"]) == PARAM_NAMES


def test_ecs_operators(ecs: dict[str, Any]) -> None:
    tasks = ecs["tasks"]
    sim = tasks["simulate"]
    assert sim["operator_class"] == "BersimEcsOperator"
    # Concurrency follows capacity: largest cluster (5) x slots per instance (3).
    assert sim["max_active_tis_per_dagrun"] == 15
    kwargs = sim["partial_kwargs"]
    assert kwargs["cluster"] == "c1"
    assert kwargs["task_definition"] == "td1"
    assert kwargs["container_name"] == "bersim"
    assert kwargs["launch_type"] == "EC2"
    assert kwargs["reattach"] is True
    assert kwargs["deferrable"] is True
    assert kwargs["awslogs_group"] == "/ecs/x/bersim"
    assert kwargs["awslogs_stream_prefix"] == "bersim/bersim"
    assert kwargs["botocore_config"] == {"retries": {"mode": "adaptive", "max_attempts": 10}}
    assert kwargs["retries"] == 2
    assert sim["execution_timeout_s"] == 7200
    # The ECS waiter outlasts execution_timeout: Airflow's timeout decides, not the waiter.
    assert kwargs["waiter_delay"] * kwargs["waiter_max_attempts"] >= 7200
    assert tasks["scale_out"]["type"] == "ScaleOutSensor"
    assert tasks["scale_in"]["type"] == "ScaleInSensor"
    assert tasks["scale_out"]["mode"] == "reschedule"
    assert tasks["scale_in"]["mode"] == "reschedule"
    # Airflow 3.3.1's stale-report race (DEFER_SETTLE_S): no deferral or reschedule may end
    # sooner than the settle time, 10 s by default.
    assert kwargs["defer_settle_s"] == 10
    assert tasks["scale_out"]["poke_interval"] == tasks["scale_in"]["poke_interval"] == 30
    assert tasks["aggregate"]["type"] == "BersimEcsAggregateOperator"


def test_local_operators(local: dict[str, Any]) -> None:
    tasks = local["tasks"]
    assert tasks["simulate"]["operator_class"] == "BersimLocalOperator"
    assert tasks["aggregate"]["type"] == "BersimLocalAggregateOperator"
    assert tasks["scale_out"]["type"] == "ScaleNoopOperator"
    assert local["tags"] == ["bersim", "local", "windows-batch"]


def test_settings_read_the_environment_only() -> None:
    s = settings_mod.load(ECS_ENV)
    assert (s.backend, s.cluster_name, s.asg_name, s.task_definition) == ("ecs", "c1", "g1", "td1")
    assert s.max_parallel_tasks == 15
    assert settings_mod.load({}).backend == "ecs"
    with pytest.raises(settings_mod.SettingsError, match="BACKEND"):
        settings_mod.load({"AIRFLOW__WINDOWS_BATCH__BACKEND": "k8s"})
    with pytest.raises(settings_mod.SettingsError, match="SLOTS_PER_INSTANCE"):
        settings_mod.load({"AIRFLOW__WINDOWS_BATCH__SLOTS_PER_INSTANCE": "four"})
    assert s.defer_settle_s == 10
    assert settings_mod.load({"AIRFLOW__WINDOWS_BATCH__DEFER_SETTLE_S": "0"}).defer_settle_s == 0
    with pytest.raises(settings_mod.SettingsError, match="DEFER_SETTLE_S"):
        settings_mod.load({"AIRFLOW__WINDOWS_BATCH__DEFER_SETTLE_S": "-1"})


class _XCom:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize("num_tasks", [1, 7, 200])
def test_mapped_task_count_follows_num_tasks(
    num_tasks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan_tasks (the real callable) returns one command per task: the map length."""
    import importlib.util

    monkeypatch.setenv("AIRFLOW__WINDOWS_BATCH__BACKEND", "local")
    spec = importlib.util.spec_from_file_location(
        "wbc_dag_under_test", HERE.parents[1] / "dags" / "windows_batch_compute_dag.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    callable_ = module.dag.get_task("plan_tasks").python_callable
    params = dict(module.dag.params.validate())
    params.update({"num_tasks": num_tasks, "ebn0_db": [4]})
    ti = _XCom()

    run = type("DagRun", (), {"conf": {"num_tasks": num_tasks, "ebn0_db": [4]}})()
    commands = callable_(params=params, dag_run=run, run_id="manual__x", ti=ti)
    assert len(commands) == num_tasks
    assert ti.pushed["aggregate_command"][-2:] == ["--expected-tasks", str(num_tasks)]
