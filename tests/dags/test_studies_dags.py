"""DAG integrity: one DAG per study, parsed without errors and without the network, in the
agreed shape; the BER study's DAG exactly as it has always been; a broken study refused alone.

Each parse runs in a child process (tests/dags/parse_check.py) with the backend's settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from windows_batch import settings as settings_mod

from .conftest import HERE, PYTHON, REPO, last_json_line

ECS_ENV = {
    "AIRFLOW__WINDOWS_BATCH__BACKEND": "ecs",
    "AIRFLOW__WINDOWS_BATCH__CLUSTER_NAME": "c1",
    "AIRFLOW__WINDOWS_BATCH__ASG_NAME": "g1",
    "AIRFLOW__WINDOWS_BATCH__TASK_FAMILY_PREFIX": "wb-study-",
    "AIRFLOW__WINDOWS_BATCH__LOG_GROUP": "/ecs/x/tasks",
    "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "my-results",
    "AIRFLOW__WINDOWS_BATCH__MAX_CLUSTER_SIZE": "5",
    "AIRFLOW__WINDOWS_BATCH__RETRIES": "2",
}
LOCAL_ENV = {"AIRFLOW__WINDOWS_BATCH__BACKEND": "local"}
BER = "windows-batch-compute-dag"
# The BER study's form and tasks as they were before the studies split: users see the same.
BER_PARAMS = [
    "s3_bucket",
    "num_tasks",
    "ebn0_db",
    "max_bits_per_task",
    "target_errors",
    "allocation",
    "seed",
    "cluster_size",
    "scale_out_timeout_s",
    "scale_in_timeout_s",
    "s3_prefix_task_results",
    "s3_prefix_aggregate_results",
]
BER_TASKS = ["plan_tasks", "scale_out", "simulate", "aggregate", "scale_in", "finish"]


def parse(extra: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__WINDOWS_BATCH__")}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__WINDOWS_BATCH__CACHE_DIR": str(tmp_path / "cache"),
            **extra,
        }
    )
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
def test_every_shipped_study_parses_without_errors_and_without_network(
    backend: str, ecs: dict[str, Any], local: dict[str, Any]
) -> None:
    parsed = ecs if backend == "ecs" else local
    assert parsed["import_errors"] == {}
    assert parsed["network_attempts"] == []
    shipped = sorted(p.name for p in (REPO / "dags" / "studies").iterdir() if p.is_dir())
    tags = [t for d in parsed["dags"].values() for t in d["tags"] if t.startswith("study:")]
    assert sorted(tags) == sorted(f"study:{name}" for name in shipped)
    assert set(parsed["dags"]) == {BER, "option-pricing"}


def test_the_ber_study_keeps_its_dag_id_tasks_form_and_graph(ecs: dict[str, Any]) -> None:
    dag = ecs["dags"][BER]
    assert list(dag["tasks"]) == BER_TASKS
    assert dag["params"] == BER_PARAMS
    assert dag["display_name"] == "Windows batch compute: BER study"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    assert dag["default_retries"] == 2
    tasks = dag["tasks"]
    assert tasks["scale_out"]["upstream"] == ["plan_tasks"]
    # The fan-out maps over plan_tasks' chunks and runs once the cluster is up.
    assert tasks["simulate"]["upstream"] == ["plan_tasks", "scale_out"]
    assert tasks["aggregate"]["upstream"] == ["simulate"]
    assert tasks["aggregate"]["trigger_rule"] == "all_done"
    assert tasks["scale_in"]["is_teardown"] is True
    assert tasks["scale_in"]["trigger_rule"] == "all_done"
    assert tasks["finish"]["is_teardown"] is True
    assert tasks["finish"]["on_failure_fail_dagrun"] is True
    assert tasks["finish"]["upstream"] == ["scale_in"]
    assert tasks["aggregate"]["extra_links"] == ["Results"]
    # Its results keep their keys: the study's prefix and where the view looks both say so.
    assert "results:sim" in dag["tags"]
    assert "windows-batch" in dag["tags"]


def test_ecs_operators_run_the_study_s_task_definition(ecs: dict[str, Any]) -> None:
    sim = ecs["dags"][BER]["tasks"]["simulate"]
    assert sim["operator_class"] == "ChunkEcsOperator"
    # Concurrency follows capacity: largest cluster (5) x the study's tasks per c5.xlarge (3).
    assert sim["max_active_tis_per_dagrun"] == 15
    kwargs = sim["partial_kwargs"]
    assert kwargs["cluster"] == "c1"
    assert kwargs["task_definition"] == "wb-study-bersim"
    assert kwargs["container_name"] == "task"
    assert kwargs["launch_type"] == "EC2"
    assert kwargs["reattach"] is True
    assert kwargs["deferrable"] is True
    assert kwargs["awslogs_group"] == "/ecs/x/tasks"
    assert kwargs["awslogs_stream_prefix"] == "bersim/task"
    assert kwargs["botocore_config"] == {"retries": {"mode": "adaptive", "max_attempts": 10}}
    assert kwargs["retries"] == 2
    assert sim["execution_timeout_s"] == 7200
    # The ECS waiter outlasts execution_timeout: the deadline decides, not the waiter.
    assert kwargs["waiter_delay"] * kwargs["waiter_max_attempts"] >= 7200
    tasks = ecs["dags"][BER]["tasks"]
    assert tasks["scale_out"]["type"] == "ScaleOutSensor"
    assert tasks["scale_in"]["type"] == "ScaleInSensor"
    assert tasks["scale_out"]["mode"] == tasks["scale_in"]["mode"] == "reschedule"
    # Airflow 3.3.1's stale-report race (DEFER_SETTLE_S): no deferral or reschedule may end
    # sooner than the settle time, 10 s by default.
    assert kwargs["defer_settle_s"] == 10
    assert tasks["scale_out"]["poke_interval"] == tasks["scale_in"]["poke_interval"] == 30
    assert tasks["aggregate"]["type"] == "AggregateEcsOperator"
    assert tasks["plan_tasks"]["execution_timeout_s"] == 600
    pricing = ecs["dags"]["option-pricing"]["tasks"]
    assert list(pricing) == ["plan_tasks", "scale_out", "price", "summarize", "scale_in", "finish"]
    assert pricing["price"]["partial_kwargs"]["task_definition"] == "wb-study-option_pricing"
    # 1024 CPU units and 1024 MiB: 4 per c5.xlarge (CPU bound: 4096 units; its 8192 x 0.95 -
    # 2048 = 5734 MiB would fit 5) -> 5 x 4.
    assert pricing["price"]["max_active_tis_per_dagrun"] == 20


def test_local_operators(local: dict[str, Any]) -> None:
    tasks = local["dags"][BER]["tasks"]
    assert tasks["simulate"]["operator_class"] == "LocalRunnerOperator"
    assert tasks["aggregate"]["type"] == "LocalAggregateOperator"
    assert tasks["scale_out"]["type"] == "ScaleNoopOperator"
    assert tasks["scale_in"]["type"] == "LocalScaleInOperator"
    assert "local" in local["dags"][BER]["tags"]


def test_a_broken_study_is_refused_alone_and_the_others_still_load(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    shutil.copytree(REPO / "tests" / "workloads" / "studies" / "tiny", studies / "tiny")
    broken = studies / "broken"
    broken.mkdir()
    (broken / "template.yaml").write_text(
        yaml.safe_dump(
            {
                "specificationVersion": "jobtemplate-2023-09",
                "name": "Broken",
                "jobEnvironments": [{"name": "E"}],
                "steps": [{"name": "S", "script": {"actions": {"onRun": {"command": "x"}}}}],
            }
        )
    )
    twin = studies / "twin"
    shutil.copytree(studies / "tiny", twin)
    (twin / "study.yaml").write_text("dag_id: tiny\n")
    parsed = parse({**LOCAL_ENV, "AIRFLOW__WINDOWS_BATCH__STUDIES_DIR": str(studies)}, tmp_path)
    assert parsed["import_errors"] == {}
    dags = parsed["dags"]
    assert set(dags) == {"tiny", "broken", "twin-refused"}
    assert list(dags["tiny"]["tasks"]) == [
        "plan_tasks",
        "scale_out",
        "work",
        "combine",
        "scale_in",
        "finish",
    ]
    refused = dags["broken"]
    assert "invalid-study" in refused["tags"]
    assert list(refused["tasks"]) == ["plan_tasks"]
    assert "jobEnvironments: environments" in refused["doc_md"]
    assert "the same dag_id tiny" in dags["twin-refused"]["doc_md"]


def test_settings_read_the_environment_only() -> None:
    s = settings_mod.load(ECS_ENV)
    assert (s.backend, s.cluster_name, s.asg_name, s.task_family_prefix) == (
        "ecs",
        "c1",
        "g1",
        "wb-study-",
    )
    assert s.parallel_tasks(3) == 15
    assert settings_mod.load({}).backend == "ecs"
    assert settings_mod.load({}).max_map_length == 1024
    with pytest.raises(settings_mod.SettingsError, match="BACKEND"):
        settings_mod.load({"AIRFLOW__WINDOWS_BATCH__BACKEND": "k8s"})
    with pytest.raises(settings_mod.SettingsError, match="INSTANCE_SIZES"):
        settings_mod.load({"AIRFLOW__WINDOWS_BATCH__INSTANCE_SIZES": "c5.xlarge=four"})
    assert s.defer_settle_s == 10
    assert settings_mod.load({"AIRFLOW__WINDOWS_BATCH__DEFER_SETTLE_S": "0"}).defer_settle_s == 0
    with pytest.raises(settings_mod.SettingsError, match="DEFER_SETTLE_S"):
        settings_mod.load({"AIRFLOW__WINDOWS_BATCH__DEFER_SETTLE_S": "-1"})
    # Airflow's own [core] max_map_length, as the deployment sets it.
    mapped = settings_mod.load({"AIRFLOW__CORE__MAX_MAP_LENGTH": "2048"})
    assert mapped.max_map_length == 2048


def test_the_local_airflow_and_mwaa_map_the_same_number_of_tasks() -> None:
    """The engine refuses plans by Airflow's max_map_length as deployed: one value for both."""
    import local_airflow

    template = yaml.safe_load((REPO / "cloudformation" / "mwaa.yaml").read_text().replace("!", ""))
    default = template["Parameters"]["MaxMapLength"]["Default"]
    env = local_airflow.airflow_env(home=Path("/tmp/unused-home"), local_root=Path("/tmp/unused"))
    assert env["AIRFLOW__CORE__MAX_MAP_LENGTH"] == default
    assert settings_mod.load(env).max_map_length == int(default)
