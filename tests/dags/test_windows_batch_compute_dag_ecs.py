"""The ECS backend end to end: dag.test() against a patched moto server on 127.0.0.1.

tests/dags/moto_ecs_server.py plays ECS, its agent and the Auto Scaling group (see there). The
DAG runs unchanged: its sensors scale the group out and back, the mapped, deferrable,
reattaching EcsRunTaskOperators call RunTask and wait in (dag.test's inline) triggerer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from bersim.cli import build_parser

from .conftest import RunDag

pytestmark = pytest.mark.airflow

REGION = "us-east-1"
CLUSTER = "wb-cluster"
ASG = "wb-asg"
FAMILY = "wb-bersim"
CONTAINER = "bersim"
LOG_GROUP = "/ecs/wb/bersim"
BUCKET = "wb-results"
STUDY = {
    "s3_bucket": BUCKET,
    "num_tasks": 6,
    "ebn0_db": [0, 2, 4],
    "max_bits_per_task": 1_000_000,
    "target_errors": 100,
    "cluster_size": 2,
    "scale_out_timeout_s": 120,
    "scale_in_timeout_s": 120,
}


def provision(url: str) -> None:
    """What the CloudFormation stacks create: cluster, task definition, group, bucket."""
    kwargs: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    ecs = boto3.client("ecs", **kwargs)
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.register_task_definition(
        family=FAMILY,
        containerDefinitions=[
            {
                "name": CONTAINER,
                "image": "bersim:ltsc2022",
                "cpu": 2048,  # moto's instances have 4096: 2 tasks per instance
                "memory": 1024,
                "essential": True,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": LOG_GROUP,
                        "awslogs-region": REGION,
                        "awslogs-stream-prefix": "bersim",
                    },
                },
            }
        ],
    )
    ec2 = boto3.client("ec2", **kwargs)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    autoscaling = boto3.client("autoscaling", **kwargs)
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="wb-lc", ImageId=image, InstanceType="c5.xlarge"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=ASG,
        LaunchConfigurationName="wb-lc",
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        AvailabilityZones=[f"{REGION}a"],
    )
    boto3.client("s3", **kwargs).create_bucket(Bucket=BUCKET)


def start_ecs(moto_server: Callable[..., dict[str, Any]], **faults: str) -> dict[str, Any]:
    """A moto server playing our cluster and group (MOTO_* `faults`), provisioned."""
    server = moto_server(
        MOTO_CLUSTER=CLUSTER, MOTO_ASG_NAME=ASG, MOTO_LOG_GROUP=LOG_GROUP, **faults
    )
    provision(server["url"])
    return server


def ecs_env(base: dict[str, str], url: str) -> dict[str, str]:
    env = dict(base)
    conn = {"conn_type": "aws", "extra": {"endpoint_url": url, "region_name": REGION}}
    env.update(
        {
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AIRFLOW__WINDOWS_BATCH__BACKEND": "ecs",
            "AIRFLOW__WINDOWS_BATCH__REGION": REGION,
            "AIRFLOW__WINDOWS_BATCH__CLUSTER_NAME": CLUSTER,
            "AIRFLOW__WINDOWS_BATCH__ASG_NAME": ASG,
            "AIRFLOW__WINDOWS_BATCH__TASK_DEFINITION": FAMILY,
            "AIRFLOW__WINDOWS_BATCH__CONTAINER_NAME": CONTAINER,
            "AIRFLOW__WINDOWS_BATCH__LOG_GROUP": LOG_GROUP,
            "AIRFLOW__WINDOWS_BATCH__LOG_STREAM_PREFIX": "bersim",
            "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": BUCKET,
            "AIRFLOW__WINDOWS_BATCH__SLOTS_PER_INSTANCE": "2",
            "AIRFLOW__WINDOWS_BATCH__MAX_CLUSTER_SIZE": "4",
            "AIRFLOW__WINDOWS_BATCH__WAITER_DELAY_S": "1",
            "AIRFLOW__WINDOWS_BATCH__SCALE_POKE_INTERVAL_S": "1",
            "AIRFLOW__WINDOWS_BATCH__CAPACITY_RETRY_S": "1",
            "AIRFLOW__WINDOWS_BATCH__TASK_TIMEOUT_S": "120",
            "AIRFLOW__WINDOWS_BATCH__RETRIES": "1",
            "AIRFLOW__WINDOWS_BATCH__RETRY_DELAY_S": "0",
        }
    )
    return env


def events(server: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server["events"].read_text().splitlines()]


def desired_capacities(log: list[dict[str, Any]]) -> list[int]:
    """Every desired capacity the DAG set on the group, in order."""
    return [e["value"] for e in log if e["op"] == "set_desired_capacity"]


def check_run_tasks(calls: list[dict[str, Any]], outcome: dict[str, Any]) -> None:
    """Every RunTask: the right cluster, task definition, launch type and container."""
    for call in calls:
        assert call["cluster"] == CLUSTER
        assert call["taskDefinition"] == FAMILY
        assert call["launchType"] == "EC2"
        assert call["container"] == CONTAINER
    planned = outcome["xcom"]["plan_tasks.return_value"]
    placed = [c["command"] for c in calls if c["placed"] and c["command"][0] == "simulate"]
    parser = build_parser()
    for command in placed:
        assert command in planned
        assert parser.parse_args(command).command == "simulate"


def test_scales_out_runs_every_planned_task_aggregates_and_scales_in(
    airflow_env: dict[str, str],
    run_dag: RunDag,
    moto_server: Callable[..., dict[str, Any]],
) -> None:
    # Two RunTask calls find the cluster full: they must wait, not fail or use a retry.
    server = start_ecs(moto_server, MOTO_RESOURCE_FAILURES="2")
    outcome = run_dag(ecs_env(airflow_env, server["url"]), STUDY)
    assert outcome["state"] == "success", outcome["log"][-5000:]
    assert set(outcome["tasks"].values()) == {"success"}
    assert all(tries == 1 for tries in outcome["tries"].values()), outcome["tries"]

    # scale_out waited (rescheduled) while the instances joined one by one ...
    assert "1 of 2 container instances ACTIVE" in outcome["log"]
    assert "2 of 2 container instances ACTIVE" in outcome["log"]
    # ... and the two placement failures waited in the triggerer instead of failing.
    assert outcome["log"].count("The cluster has no room for this task now (RESOURCE:CPU)") == 2

    log = events(server)
    desired = desired_capacities(log)
    assert desired[0] == 2  # scaled out to cluster_size ...
    assert desired[-1] == 0  # ... and back to 0 at the end
    assert desired.index(0) > max(i for i, v in enumerate(desired) if v == 2)
    calls = [e for e in log if e["op"] == "run_task"]
    check_run_tasks(calls, outcome)
    simulate_placed = [c for c in calls if c["placed"] and c["command"][0] == "simulate"]
    assert len(simulate_placed) == STUDY["num_tasks"]
    assert sorted(map(json.dumps, (c["command"] for c in simulate_placed))) == sorted(
        map(json.dumps, outcome["xcom"]["plan_tasks.return_value"])
    )
    assert sum(not c["placed"] for c in calls) == 2
    aggregate = [c["command"] for c in calls if c["command"][0] == "aggregate"]
    assert aggregate == [outcome["xcom"]["plan_tasks.aggregate_command"]]
    assert aggregate[0][-2:] == ["--expected-tasks", "6"]
    # The operator found the awslogs stream <prefix>/<container>/<task id> and returned its line.
    assert outcome["xcom"]["aggregate.return_value"].startswith("bersim (moto): aggregate --input")
    link = outcome["xcom"]["aggregate._link_ResultsPlotLink"]
    assert link.startswith(f"https://s3.console.aws.amazon.com/s3/object/{BUCKET}?region={REGION}&")
    assert "results.png" in link
    # scale_in read the run's instances and tasks back and logged where the time went.
    assert "cluster_size 2; estimate: 2 instances, about " in outcome["log"]
    usage = [line for line in outcome["log"].splitlines() if "cluster: " in line]
    assert usage, "scale_in logged no cluster line"
    assert "instance-hours (on-demand c5.xlarge), about $" in usage[-1]
    assert "; 2 instances, 7 tasks, " in usage[-1]


def test_failed_simulations_still_scale_in_and_fail_the_run(
    airflow_env: dict[str, str],
    run_dag: RunDag,
    moto_server: Callable[..., dict[str, Any]],
) -> None:
    server = start_ecs(moto_server, MOTO_FAIL_TASK_INDEXES="1,4")
    outcome = run_dag(ecs_env(airflow_env, server["url"]), STUDY)
    tasks = outcome["tasks"]
    assert outcome["state"] == "failed"
    assert tasks["simulate[1]"] == "failed"
    assert tasks["simulate[4]"] == "failed"
    assert all(tasks[f"simulate[{i}]"] == "success" for i in (0, 2, 3, 5))
    assert outcome["tries"]["simulate[1]"] == 2  # one Airflow retry, then failed
    assert tasks["aggregate"] == "failed"  # bersim aggregate exit 3: tasks missing
    assert "bersim exited with 3" in outcome["log"]
    assert tasks["scale_in"] == "success"

    log = events(server)
    desired = desired_capacities(log)
    assert desired[0] == 2
    assert desired[-1] == 0
    calls = [e for e in log if e["op"] == "run_task"]
    check_run_tasks(calls, outcome)
    sims = [c for c in calls if c["placed"] and c["command"][0] == "simulate"]
    # 6 tasks, and the 2 failing ones once more (retry: a new task, not a reattach).
    assert len(sims) == 8
    assert any(c["command"][0] == "aggregate" for c in calls)


def test_a_failed_simulation_fails_the_run_even_when_every_result_is_there(
    airflow_env: dict[str, str],
    run_dag: RunDag,
    moto_server: Callable[..., dict[str, Any]],
) -> None:
    """E.g. a container wrote its result, then its Airflow task failed: the run is not green."""
    server = start_ecs(moto_server, MOTO_FAIL_TASK_INDEXES="2", MOTO_AGGREGATE_EXIT="0")
    env = {**ecs_env(airflow_env, server["url"]), "AIRFLOW__WINDOWS_BATCH__RETRIES": "0"}
    outcome = run_dag(env, {**STUDY, "num_tasks": 3})
    assert outcome["state"] == "failed"
    assert outcome["tasks"]["simulate[2]"] == "failed"
    assert outcome["tasks"]["aggregate"] == "failed"
    assert (
        "1 simulate task(s) failed although the aggregate found every task result" in outcome["log"]
    )
    assert outcome["tasks"]["scale_in"] == "success"
