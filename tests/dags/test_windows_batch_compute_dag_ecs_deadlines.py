"""Deadlines, stops and results that exist, end to end: dag.test() against our stacks in moto.

tests/dags/ecs_harness.py deploys the real templates into the moto ECS server, whose containers
run the real bersim command (tests/dags/moto_ecs_server.py); tests/dags/moto_ecs_faults.py adds
the faults: a container that never exits until StopTask, CloudWatch Logs refusing GetLogEvents.
The DAG runs with the MWAA execution role's credentials and mwaa.yaml's settings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from windows_batch import settings as settings_mod
from windows_batch.params import form, validate_study
from windows_batch.plan import plan_study

from . import ecs_harness
from .conftest import RunDag, local_airflow, migrated_home

pytestmark = pytest.mark.airflow

FAULTS_SERVER = Path(__file__).resolve().with_name("moto_ecs_faults.py")
STUDY: dict[str, Any] = {
    "num_tasks": 3,
    "ebn0_db": [2, 4],
    "max_bits_per_task": 20_000,
    "target_errors": 10,
    "cluster_size": 1,
    "scale_out_timeout_s": 120,
    "scale_in_timeout_s": 120,
}
_DEADLINE_IN_REASON = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\)")


@contextmanager
def deployment(tmp_path: Path, **faults: str) -> Iterator[ecs_harness.EcsDeployment]:
    """Our stacks in the moto ECS server with `faults` (moto_ecs_faults.py) switched on."""
    original = ecs_harness.SERVER
    ecs_harness.SERVER = FAULTS_SERVER
    try:
        with ecs_harness.moto_ecs(tmp_path, MOTO_CONTAINER_STOP_TIMEOUT_S="5", **faults) as d:
            yield d
    finally:
        ecs_harness.SERVER = original


def dag_env(d: ecs_harness.EcsDeployment, base: dict[str, str], **settings: str) -> dict[str, str]:
    env = d.airflow_env(base)
    env.update(
        {
            "AIRFLOW__WINDOWS_BATCH__WAITER_DELAY_S": "1",
            "AIRFLOW__WINDOWS_BATCH__SCALE_POKE_INTERVAL_S": "1",
            "AIRFLOW__WINDOWS_BATCH__CAPACITY_RETRY_S": "2",
            "AIRFLOW__WINDOWS_BATCH__DEFER_SETTLE_S": "0",  # dag.test(): no executor
            "AIRFLOW__WINDOWS_BATCH__RETRY_DELAY_S": "0",
            "AIRFLOW__WINDOWS_BATCH__RUN_NOTE": "off",
        }
    )
    env.update({f"AIRFLOW__WINDOWS_BATCH__{k}": v for k, v in settings.items()})
    return env


def study(d: ecs_harness.EcsDeployment, **changes: Any) -> dict[str, Any]:
    return {**STUDY, "s3_bucket": d.outputs["storage"]["ResultsBucketName"], **changes}


def desired(d: ecs_harness.EcsDeployment) -> list[int]:
    return [int(e["value"]) for e in d.events("set_desired_capacity")]


def index_of(command: list[str]) -> int | None:
    if command[:1] == ["simulate"]:
        return int(command[command.index("--task-index") + 1])
    return None


def test_a_hung_container_is_stopped_at_its_deadline_and_the_run_fails_with_the_group_at_0(
    airflow_env: dict[str, str], run_dag: RunDag, tmp_path: Path
) -> None:
    timeout_s = 20
    with deployment(tmp_path, MOTO_HANG_TASK_INDEXES="1") as d:
        env = dag_env(d, airflow_env, TASK_TIMEOUT_S=str(timeout_s), RETRIES="1")
        started = time.monotonic()
        outcome = run_dag(env, study(d), timeout_s=480)
        elapsed_s = time.monotonic() - started
        runs = [e for e in d.events("run_task") if e["placed"]]
        stops = d.events("stop_task")
        exits = {e["task_arn"]: e["exit_code"] for e in d.events("container_exited")}
        capacities = desired(d)
    tasks = outcome["tasks"]
    assert outcome["state"] == "failed"
    assert tasks["simulate[1]"] == "failed"
    assert outcome["tries"]["simulate[1]"] == 2
    assert tasks["simulate[0]"] == tasks["simulate[2]"] == "success"
    assert tasks["aggregate"] == "failed"  # task 1's result is missing
    assert tasks["scale_in"] == "success"
    assert tasks["finish"] == "failed"  # the verdict
    assert capacities[0] == 1
    assert capacities[-1] == 0
    # Each try started its own container (the retry did not reattach to the stopped one) ...
    hung = [arn for e in runs if index_of(e["command"]) == 1 for arn in e["task_arns"]]
    assert len(hung) == len(set(hung)) == 2
    # ... and each was stopped at its deadline, with a reason that says so, and exited.
    assert sorted(s["task"] for s in stops) == sorted(hung)
    late_s = []
    for stop in stops:
        assert f"reached the deadline TASK_TIMEOUT_S={timeout_s} s" in stop["reason"]
        assert exits[stop["task"]] == 143  # SIGTERM, as Docker reports it
        deadline = datetime.strptime(
            _DEADLINE_IN_REASON.search(stop["reason"]).group(1),  # type: ignore[union-attr]
            "%Y-%m-%d %H:%M:%S",
        ).replace(tzinfo=UTC)
        late_s.append(stop["t"] - deadline.timestamp())
    # The deadline is printed to the second: StopTask came within a poll of it.
    assert all(-1 <= late < 15 for late in late_s), late_s
    print(f"deadline -> StopTask: {', '.join(f'{x:.1f} s' for x in late_s)}; run {elapsed_s:.0f} s")
    assert elapsed_s < 400


def register_revision(d: ecs_harness.EcsDeployment, **container: Any) -> str:
    """A new revision of the deployment's task definition with `container` changed; its ref."""
    ecs = d.client("ecs")
    family = d.outputs["ecs"]["TaskDefinitionFamily"]
    current = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    revision = ecs.register_task_definition(
        family=family,
        containerDefinitions=[{**current["containerDefinitions"][0], **container}],
        taskRoleArn=current["taskRoleArn"],
        executionRoleArn=current["executionRoleArn"],
    )["taskDefinition"]["revision"]
    return f"{family}:{revision}"


def test_a_task_larger_than_every_instance_fails_at_once_not_at_its_deadline(
    airflow_env: dict[str, str], run_dag: RunDag, tmp_path: Path
) -> None:
    """Issue 17 point 13, its measurement: 8 such tasks, a 40 s deadline, 2 retries. Each try
    used to wait for room until its deadline (171 RunTask calls, the run failed after 380 s).

    8000 MiB: more than the cluster's instances register (moto registers 7482 MiB each), though
    one instance type of the group, m5.xlarge, would hold it, so plan_tasks lets it through.
    """
    timeout_s = 40
    with deployment(tmp_path) as d:
        env = dag_env(
            d,
            airflow_env,
            TASK_TIMEOUT_S=str(timeout_s),
            RETRIES="2",
            TASK_DEFINITION=register_revision(d, memory=8000),
            TASK_MEMORY_MIB="8000",
        )
        started = time.monotonic()
        outcome = run_dag(env, study(d, num_tasks=8), timeout_s=600)
        elapsed_s = time.monotonic() - started
        calls = d.events("run_task")
        capacities = desired(d)
    tasks, log = outcome["tasks"], outcome["log"]
    simulations = [f"simulate[{i}]" for i in range(8)]
    assert outcome["state"] == "failed"
    assert [tasks[s] for s in simulations] == ["failed"] * 8
    assert tasks["aggregate"] == "failed"
    # Each failed at its first RunTask, without a retry and without waiting for room.
    assert [outcome["tries"][s] for s in (*simulations, "aggregate")] == [1] * 9
    assert len(calls) == 9
    assert not any(c["placed"] for c in calls)
    assert "The cluster has no room for this task now" not in log
    assert "reached its deadline" not in log
    assert log.count("the task needs 1024 CPU units and 8000 MiB") >= 9
    assert "(the most registered: 4096 CPU units and 7482 MiB)" in log
    assert tasks["scale_in"] == "success"
    assert capacities[-1] == 0
    print(f"{len(calls)} RunTask calls, run {elapsed_s:.0f} s (deadline {timeout_s} s per try)")


def test_a_task_no_instance_type_of_the_group_holds_is_refused_before_anything_scales(
    airflow_env: dict[str, str], run_dag: RunDag, tmp_path: Path
) -> None:
    """Issue 17 point 13 (b): 20000 MiB is more than any of the group's instance types
    registers (m5.xlarge, the largest: about 13516 MiB), so plan_tasks refuses the study."""
    with deployment(tmp_path) as d:
        env = dag_env(
            d,
            airflow_env,
            TASK_DEFINITION=register_revision(d, memory=20000),
            TASK_MEMORY_MIB="20000",
        )
        outcome = run_dag(env, study(d, num_tasks=2), timeout_s=400)
        calls = d.events("run_task")
        capacities = desired(d)
    tasks = outcome["tasks"]
    assert outcome["state"] == "failed"
    assert tasks["plan_tasks"] == "failed"
    assert (
        "The cluster cannot run this study: a task needs 1024 CPU units and 20000 MiB"
        in (outcome["log"])
    )
    assert "m5.xlarge registers about 4096 CPU units and 13516 MiB" in outcome["log"]
    assert calls == []
    assert all(capacity == 0 for capacity in capacities), capacities


def test_a_log_fetch_failure_after_exit_0_is_a_success(
    airflow_env: dict[str, str], run_dag: RunDag, tmp_path: Path
) -> None:
    with deployment(tmp_path, MOTO_LOGS_FAIL="missing") as d:
        env = dag_env(d, airflow_env, TASK_TIMEOUT_S="120", RETRIES="0")
        outcome = run_dag(env, study(d, num_tasks=2), timeout_s=400)
        exits = [e["exit_code"] for e in d.events("container_exited")]
    assert outcome["state"] == "success", outcome["log"][-4000:]
    assert set(outcome["tasks"].values()) == {"success"}
    assert exits == [0, 0, 0]  # two simulations and the aggregate
    assert "its last log line could not be read" in outcome["log"]


def test_a_task_whose_host_was_terminated_runs_again_without_a_retry(
    airflow_env: dict[str, str], run_dag: RunDag, tmp_path: Path
) -> None:
    """Issue 12 point 2: an interruption costs time, not one of the user's retries.

    The only instance is terminated under task 1 (as EC2 reclaims a Spot instance): the group
    replaces it, and every task it took down runs again there, counted once.
    """
    with deployment(tmp_path, MOTO_RECLAIM_TASK_INDEXES="1") as d:
        env = dag_env(d, airflow_env, TASK_TIMEOUT_S="180", RETRIES="0")
        conf = study(d)
        outcome = run_dag(env, conf, timeout_s=400)
        runs = Counter(index_of(e["command"]) for e in d.events("run_task") if e["placed"])
        reclaimed = [e["instance"] for e in d.events("reclaim_instance")]
        replaced = [e["instance"] for e in d.events("replace_instance")]
        bucket = conf["s3_bucket"]
        s3 = d.client("s3")
        prefix = f"sim/task_results/{outcome['run_id']}/"
        task_results = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        results_key = f"sim/aggregate_results/{outcome['run_id']}/results.json"
        results = json.load(s3.get_object(Bucket=bucket, Key=results_key)["Body"])
        reservations = d.client("ec2").describe_instances()["Reservations"]
        instances = {
            i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]
        }
        group = d.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]
    assert outcome["state"] == "success", outcome["log"][-4000:]
    assert all(tries == 1 for tries in outcome["tries"].values()), outcome["tries"]
    assert len(reclaimed) == 1
    assert replaced == reclaimed  # the group replaced the instance EC2 took
    assert len(instances) == 2
    assert set(instances.values()) == {"terminated"}  # and scaled both in at the end
    assert group["DesiredCapacity"] == 0
    assert not group["Instances"]
    assert f"lost its host (Host EC2 (instance {reclaimed[0]}) terminated." in outcome["log"]
    assert runs[1] == 2  # index 1 ran again; 0 and 2 once more only if they were on the host too
    assert {runs[0], runs[2]} <= {1, 2}
    assert sum(runs[i] for i in (0, 1, 2)) - 3 == outcome["log"].count("lost its host (Host EC2")
    # Each index has one result and is counted once in the aggregate.
    assert sorted(o["Key"].removeprefix(prefix) for o in task_results) == [
        "task-00000.json",
        "task-00001.json",
        "task-00002.json",
    ]
    assert results["missing_tasks"] == []
    assert sum(row["tasks"] for row in results["rows"]) == 3


def planned(env: dict[str, str], conf: dict[str, Any], run_id: str) -> list[list[str]]:
    """The simulate commands plan_tasks will give this run (the planner is deterministic)."""
    params = {name: param.value for name, param in form(settings_mod.load(env)).items()}
    study_, _ = validate_study({**params, **conf}, conf=conf, max_cluster_size=3)
    return plan_study(study_, run_id).simulate_commands


def test_an_existing_result_is_reported_not_simulated_again(
    airflow_env: dict[str, str], run_dag: RunDag, tmp_path: Path
) -> None:
    """A retry after the container finished but its Airflow task died: the result is there."""
    logical_date = "2026-03-04T05:06:07+00:00"
    with deployment(tmp_path) as d:
        env = dag_env(d, airflow_env, TASK_TIMEOUT_S="120", RETRIES="0")
        conf = study(d)
        command = planned(env, conf, f"manual__{logical_date}")[1]
        # The result bersim itself writes for that command (run here, to a local file).
        local = tmp_path / "task-1.json"
        argv = [*command[: command.index("--output")], "--output", str(local)]
        subprocess.run([sys.executable, "-m", "bersim", *argv], check=True, timeout=120)
        bucket, _, key = command[-1].removeprefix("s3://").partition("/")
        d.client("s3").put_object(Bucket=bucket, Key=key, Body=local.read_bytes())
        outcome = run_dag(env, conf, logical_date=logical_date, timeout_s=400)
        simulated = [index_of(e["command"]) for e in d.events("run_task") if e["placed"]]
        prefix = conf["s3_bucket"], f"sim/aggregate_results/manual__{logical_date}/results.json"
        results = json.load(d.client("s3").get_object(Bucket=prefix[0], Key=prefix[1])["Body"])
    assert outcome["state"] == "success", outcome["log"][-4000:]
    assert sorted(i for i in simulated if i is not None) == [0, 2]
    assert f"Not simulating again: existing result {command[-1]}: task 1" in outcome["log"]
    assert results["missing_tasks"] == []
    assert sum(row["tasks"] for row in results["rows"]) == 3


def _ti_state(url: str, run_path: str, map_index: int) -> str | None:
    path = f"{run_path}/taskInstances/simulate/{map_index}"
    status, body = local_airflow.request(url, "GET", path)
    return body.get("state") if status == 200 else None


def _triggers_polling(home: Path) -> set[int]:
    """Map indexes of simulate whose trigger has polled ECS at least once (its trigger log).

    Not merely started: a cancel that lands while the trigger still creates its aiobotocore
    clients arrives without its message (asyncio drops it crossing a thread's future), and
    the triggerer then cannot tell it was a person's action: scale_in stops such a task.
    """
    started = set()
    for log in home.glob("logs/dag_id=*/run_id=*/task_id=simulate/map_index=*/*.trigger.*.log"):
        if "Status of the task is" in log.read_text():
            started.add(int(log.parent.name.split("=")[1]))
    return started


def test_in_a_real_scheduler_marking_a_task_or_the_run_failed_stops_its_containers(
    tmp_path: Path, migrated_db: Path
) -> None:
    """`airflow standalone` (scheduler, triggerer, API server), two containers that hang.

    Marking simulate[0] failed stops its container (the triggerer cancels the deferred task's
    trigger and calls its on_kill); marking the whole run failed stops the other one, and the
    teardown scale_in still brings the group to 0.
    """
    with deployment(tmp_path, MOTO_HANG_TASK_INDEXES="0,1") as d:
        base = local_airflow.airflow_env(
            home=migrated_home(migrated_db, tmp_path / "airflow"),
            port=local_airflow.free_port(),
            local_root=tmp_path / "buckets",
            parallelism=2,
        )
        env = dag_env(d, base, TASK_TIMEOUT_S="900", RETRIES="0")
        # The triggerer imports DeadlineTaskDoneTrigger by its module path (dags/ on MWAA).
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "dags")
        local_airflow.migrate(env)
        with local_airflow.standalone(env) as url:
            dag = "dags/windows-batch-compute-dag"
            d.wait_for("the DAG", lambda: local_airflow.request(url, "GET", dag)[0] == 200)
            status, run = local_airflow.request(
                url,
                "POST",
                f"{dag}/dagRuns",
                {"logical_date": None, "conf": study(d, num_tasks=2, target_errors=0)},
            )
            assert status == 200, run
            run_path = f"{dag}/dagRuns/{run['dag_run_id']}"

            def containers() -> dict[int, str]:
                started = d.events("container_started")
                found = {index_of(e["command"]): e["task_arn"] for e in started}
                ready = all(_ti_state(url, run_path, i) == "deferred" for i in (0, 1)) and {
                    0,
                    1,
                } <= _triggers_polling(tmp_path / "airflow")
                return found if {0, 1} <= set(found) and ready else {}

            arns = d.wait_for("both containers running, tasks deferred", containers, timeout_s=300)

            def stopped(arn: str) -> Any:
                return next((s for s in d.events("stop_task") if s["task"] == arn), None)

            marked = time.time()
            status, body = local_airflow.request(
                url, "PATCH", f"{run_path}/taskInstances/simulate/0", {"new_state": "failed"}
            )
            assert status == 200, body
            first = d.wait_for("StopTask of simulate[0]", lambda: stopped(arns[0]), timeout_s=90)
            assert "marked its task failed or success" in first["reason"]
            assert stopped(arns[1]) is None  # the other simulation keeps running
            task_s = first["t"] - marked

            marked = time.time()
            status, body = local_airflow.request(url, "PATCH", run_path, {"state": "failed"})
            assert status == 200, body
            second = d.wait_for("StopTask of simulate[1]", lambda: stopped(arns[1]), timeout_s=90)
            run_s = second["t"] - marked

            def finished() -> Any:
                state = local_airflow.request(url, "GET", run_path)[1].get("state")
                scale_in = local_airflow.request(url, "GET", f"{run_path}/taskInstances/scale_in")
                done = scale_in[1].get("state") in ("success", "failed")
                return (state, scale_in[1]["state"]) if done and state != "running" else None

            run_state, scale_in_state = d.wait_for("the run to end", finished, timeout_s=180)
            capacities = desired(d)
    assert (run_state, scale_in_state) == ("failed", "success")
    assert capacities[-1] == 0
    print(f"mark failed -> StopTask: task {task_s:.1f} s, run {run_s:.1f} s")
    assert task_s < 60
    assert run_s < 60
