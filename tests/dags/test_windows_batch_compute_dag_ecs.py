"""The ECS backend end to end: dag.test() against our stacks in a moto server on 127.0.0.1.

tests/dags/ecs_harness.py deploys storage, network, ecs and mwaa.yaml's execution role into
tests/dags/moto_ecs_server.py, whose ECS runs each task's container command (`python -m bersim`)
as a process against moto's S3 with the task role's credentials. The DAG runs unchanged with
mwaa.yaml's settings and the execution role's credentials; every call is authorized against the
role's policy as the templates define it (see moto_ecs_server.py). Failures come from bersim
itself: a result the task role may not write (exit 1), a stray file among the task results
(exit 2), results missing (exit 3).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from bersim.cli import build_parser
from windows_batch.results import summary_line

from . import iam_policy
from .conftest import RunDag
from .ecs_harness import EcsDeployment

pytestmark = pytest.mark.airflow

STUDY: dict[str, Any] = {
    "num_tasks": 2,
    "ebn0_db": [0, 4],
    "max_bits_per_task": 100_000,
    "target_errors": 100,
    "cluster_size": 2,
    "scale_out_timeout_s": 120,
    "scale_in_timeout_s": 120,
}
# dag.test() has no API server, and moto has no MWAA API for RUN_NOTE=mwaa: no run note here
# (tests/dags/test_ecs_standalone.py sets one through the real REST API).
TEST_SETTINGS = {
    "AIRFLOW__WINDOWS_BATCH__WAITER_DELAY_S": "1",
    "AIRFLOW__WINDOWS_BATCH__SCALE_POKE_INTERVAL_S": "1",
    "AIRFLOW__WINDOWS_BATCH__CAPACITY_RETRY_S": "1",
    # dag.test() runs triggers inline, with no executor whose late report DEFER_SETTLE_S waits for.
    "AIRFLOW__WINDOWS_BATCH__DEFER_SETTLE_S": "0",
    "AIRFLOW__WINDOWS_BATCH__TASK_TIMEOUT_S": "120",
    "AIRFLOW__WINDOWS_BATCH__RETRIES": "1",
    "AIRFLOW__WINDOWS_BATCH__RETRY_DELAY_S": "0",
    "AIRFLOW__WINDOWS_BATCH__RUN_NOTE": "off",
}
LOGICAL_DATE = "2026-01-02T03:04:05+00:00"
RUN_ID = f"manual__{LOGICAL_DATE}"
# The calls the DAG and bersim make on a successful run, by role (the IAM check's coverage).
MWAA_ACTIONS = {
    "autoscaling:SetDesiredCapacity",
    "autoscaling:DescribeAutoScalingGroups",
    "ecs:ListContainerInstances",
    "ecs:DescribeContainerInstances",
    "ecs:ListTasks",
    "ecs:RunTask",
    "iam:PassRole",
    "ecs:DescribeTasks",
    "logs:GetLogEvents",
    "s3:GetObject",
    "cloudwatch:PutMetricData",  # scale_out's heartbeat for the idle alarm
}
# s3:PutObjectTagging: bersim tags each task result in its PutObject (the expiry tag).
TASK_ROLE_ACTIONS = {"s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging", "s3:GetObject"}

Deploy = Callable[..., EcsDeployment]


def dag_env(base: dict[str, str], deployment: EcsDeployment, **extra: str) -> dict[str, str]:
    return {**deployment.airflow_env(base), **TEST_SETTINGS, **extra}


def desired_capacities(deployment: EcsDeployment) -> list[int]:
    """Every desired capacity set on the group, in order."""
    return [e["value"] for e in deployment.events("set_desired_capacity")]


def check_run_tasks(deployment: EcsDeployment, outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """Every RunTask: our cluster, task definition, EC2 and container, a planned command."""
    ecs = deployment.outputs["ecs"]
    calls = deployment.events("run_task")
    planned = outcome["xcom"]["plan_tasks.return_value"]
    parser = build_parser()
    for call in calls:
        assert call["cluster"] == ecs["ClusterName"]
        assert call["taskDefinition"] == ecs["TaskDefinitionFamily"]
        assert call["launchType"] == "EC2"
        assert call["container"] == ecs["ContainerName"]
        if call["command"][0] == "simulate":
            assert call["command"] in planned
            assert parser.parse_args(call["command"]).command == "simulate"
    return calls


def check_scaling(deployment: EcsDeployment, *, size: int) -> None:
    """The group went to `size`, then back to 0 after the last time it was set to `size`; and
    scale_out told the idle alarm at its checks that the group was scaling out (ecs.yaml's
    IdleClusterAlarm reads that heartbeat)."""
    desired = desired_capacities(deployment)
    assert desired[0] == size
    assert desired[-1] == 0
    assert desired.index(0) > max(i for i, v in enumerate(desired) if v == size)
    group = deployment.outputs["ecs"]["AutoScalingGroupName"]
    metrics = deployment.client("cloudwatch").list_metrics(
        Namespace="WindowsBatch", MetricName="ScalingOut"
    )["Metrics"]
    assert [m["Dimensions"] for m in metrics] == [
        [{"Name": "AutoScalingGroupName", "Value": group}]
    ]


def read_json(deployment: EcsDeployment, uri: str) -> dict[str, Any]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = deployment.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return dict(json.loads(body))


def output_prefix(outcome: dict[str, Any]) -> str:
    command = outcome["xcom"]["plan_tasks.aggregate_command"]
    return str(command[command.index("--output") + 1]).rstrip("/")


def role_of(principal: str) -> str:
    """assumed-role/<role name>/<session> -> role name."""
    return principal.split("/")[1] if ":assumed-role/" in principal else principal


def check_iam(deployment: EcsDeployment) -> dict[str, set[str]]:
    """No call of the DAG or bersim was denied or unmapped; returns the actions per role.

    The one denial AWS gives and bersim expects: HeadBucket (s3:ListBucket without a prefix)
    by the task role, whose ListBucket is limited to sim/*; bersim then lets the write decide.
    """
    mwaa_role = deployment.role_name("mwaa", "ExecutionRoleArn")
    task_role = deployment.role_name("ecs", "TaskRoleArn")
    actions: dict[str, set[str]] = {mwaa_role: set(), task_role: set()}
    for decision in deployment.iam_decisions():
        role = role_of(decision["principal"])
        if role not in actions:
            continue
        assert decision["mapped"], decision
        expected_denial = (
            role == task_role and decision["call"] == "s3:HeadBucket" and not decision["context"]
        )
        assert decision["decision"] == iam_policy.ALLOW or expected_denial, decision
        actions[role].add(decision["action"])
    return {"mwaa": actions[mwaa_role], "task": actions[task_role]}


def role_statements(deployment: EcsDeployment, stack: str, output: str) -> list[dict[str, Any]]:
    iam = deployment.client("iam")
    role = deployment.role_name(stack, output)
    documents = [
        deployment.role_policy(role, name)
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    ]
    return iam_policy.statements_of(documents)


def test_runs_every_planned_task_in_its_container_aggregates_and_scales_in(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    # Two RunTask calls find the cluster full: they must wait, not fail or use a retry.
    deployment = ecs_deployment(MOTO_RESOURCE_FAILURES="2")
    outcome = run_dag(dag_env(airflow_env, deployment), STUDY)
    assert outcome["state"] == "success", outcome["log"][-5000:]
    assert set(outcome["tasks"].values()) == {"success"}
    assert all(tries == 1 for tries in outcome["tries"].values()), outcome["tries"]

    # scale_out waited (rescheduled) while the instances joined one by one ...
    assert "1 of 2 container instances ACTIVE" in outcome["log"]
    assert "2 of 2 container instances ACTIVE" in outcome["log"]
    # ... and the two placement failures waited in the triggerer instead of failing.
    assert outcome["log"].count("The cluster has no room for this task now (RESOURCE:CPU)") == 2
    check_scaling(deployment, size=2)

    calls = check_run_tasks(deployment, outcome)
    assert sum(not c["placed"] for c in calls) == 2
    simulate = [c["command"] for c in calls if c["placed"] and c["command"][0] == "simulate"]
    assert sorted(map(json.dumps, simulate)) == sorted(
        map(json.dumps, outcome["xcom"]["plan_tasks.return_value"])
    )
    aggregate = [c["command"] for c in calls if c["command"][0] == "aggregate"]
    assert aggregate == [outcome["xcom"]["plan_tasks.aggregate_command"]]
    exits = {e["task_arn"]: e["exit_code"] for e in deployment.events("container_exited")}
    assert len(exits) == STUDY["num_tasks"] + 1
    assert set(exits.values()) == {0}

    # The containers' real outputs: results in moto's S3, summed from the task results.
    prefix = output_prefix(outcome)
    results = read_json(deployment, f"{prefix}/results.json")
    assert results["missing_tasks"] == []
    assert results["tasks"] == STUDY["num_tasks"]
    assert [row["ebn0_db"] for row in results["rows"]] == STUDY["ebn0_db"]
    task_bits = 0
    for command in simulate:
        task = read_json(deployment, command[command.index("--output") + 1])
        task_bits += task["bits"]
    assert results["bits"] == task_bits > 0
    bucket, _, key = prefix.removeprefix("s3://").partition("/")
    listed = deployment.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{key}/")
    assert {o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]} == {
        "results.csv",
        "results.json",
        "results.png",
    }
    # The summary comes from the results.json the container wrote.
    assert outcome["xcom"]["aggregate.return_value"] == summary_line(results)
    assert f"Summary: {summary_line(results)}" in outcome["log"]
    link = outcome["xcom"]["aggregate._link_ResultsPlotLink"]
    assert link.startswith(f"https://s3.console.aws.amazon.com/s3/object/{bucket}?region=")
    # plan_tasks estimated the run; scale_in read its instances and tasks back and logged where
    # the time went.
    assert "cluster_size 2; estimate: 2 instances, about " in outcome["log"]
    usage = [line for line in outcome["log"].splitlines() if "cluster: " in line]
    assert usage, "scale_in logged no cluster line"
    assert "instance-hours (on-demand c5.xlarge), about $" in usage[-1]
    assert f"; 2 instances, {STUDY['num_tasks'] + 1} tasks, " in usage[-1]

    # Every call was allowed by its role's policy, and the check saw them all.
    actions = check_iam(deployment)
    assert actions["mwaa"] >= MWAA_ACTIONS, MWAA_ACTIONS - actions["mwaa"]
    assert actions["task"] >= TASK_ROLE_ACTIONS, TASK_ROLE_ACTIONS - actions["task"]
    # The same calls against the execution role without its ListTasks statement: denied.
    narrowed = [
        s
        for s in role_statements(deployment, "mwaa", "ExecutionRoleArn")
        if s.get("Sid") != "ListTasksOnOurCluster"
    ]
    list_tasks = [
        d
        for d in deployment.iam_decisions()
        if d["action"] == "ecs:ListTasks" and "assumed-role" in d["principal"]
    ]
    assert list_tasks
    for decision in list_tasks:
        request = iam_policy.Request(decision["action"], decision["resource"], decision["context"])
        assert iam_policy.evaluate(narrowed, request) == iam_policy.IMPLICIT_DENY


def test_a_result_the_task_role_may_not_write_fails_that_task_and_the_aggregate(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """bersim exit 1 (access denied) is retried; aggregate exit 3 (a result missing) is not."""
    deployment = ecs_deployment()
    denied_key = f"sim/task_results/{RUN_ID}/task-00001.json"
    bucket = deployment.outputs["storage"]["ResultsBucketName"]
    deployment.client("iam").put_role_policy(
        RoleName=deployment.role_name("ecs", "TaskRoleArn"),
        PolicyName="deny-one-result",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{bucket}/{denied_key}",
                    }
                ],
            }
        ),
    )
    outcome = run_dag(dag_env(airflow_env, deployment), STUDY, logical_date=LOGICAL_DATE)
    tasks, tries = outcome["tasks"], outcome["tries"]
    assert outcome["run_id"] == RUN_ID
    assert outcome["state"] == "failed"
    assert tasks["simulate[1]"] == "failed"
    assert tries["simulate[1]"] == 2  # exit 1 may be transient: one retry, a new ECS task
    assert tasks["simulate[0]"] == "success"
    assert tasks["aggregate"] == "failed"
    assert tries["aggregate"] == 1  # exit 3: running it again gives the same answer
    assert "bersim exited with 3" in outcome["log"]
    assert "access denied to write" in outcome["log"]  # bersim's own line, from CloudWatch
    assert tasks["scale_in"] == "success"
    assert desired_capacities(deployment)[-1] == 0

    calls = check_run_tasks(deployment, outcome)
    sims = [c for c in calls if c["placed"] and c["command"][0] == "simulate"]
    assert len(sims) == 3
    exits = [e["exit_code"] for e in deployment.events("container_exited")]
    assert sorted(exits) == [0, 1, 1, 3]
    # The partial results: what was there, and which task is missing.
    results = read_json(deployment, f"{output_prefix(outcome)}/results.json")
    assert results["missing_tasks"] == [1]
    assert "1 of 2 task results MISSING" in outcome["log"]
    denials = [
        d
        for d in deployment.iam_decisions()
        if d["decision"] == iam_policy.DENY and d["action"] == "s3:PutObject"
    ]
    assert {d["resource"] for d in denials} == {f"arn:aws:s3:::{bucket}/{denied_key}"}
    assert len(denials) == 2


def test_a_stray_file_among_the_task_results_fails_the_aggregate_without_retry(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """bersim aggregate exit 2 (bad input): a JSON file that is not a task result."""
    deployment = ecs_deployment()
    bucket = deployment.outputs["storage"]["ResultsBucketName"]
    stray = f"sim/task_results/{RUN_ID}/notes.json"
    deployment.client("s3").put_object(Bucket=bucket, Key=stray, Body=b'{"hello": 1}')
    study = {**STUDY, "num_tasks": 1, "ebn0_db": [4], "cluster_size": 1}
    outcome = run_dag(dag_env(airflow_env, deployment), study, logical_date=LOGICAL_DATE)
    assert outcome["state"] == "failed"
    assert outcome["tasks"]["simulate[0]"] == "success"
    assert outcome["tasks"]["aggregate"] == "failed"
    assert outcome["tries"]["aggregate"] == 1
    assert "bersim exited with 2" in outcome["log"]
    assert "notes.json" in outcome["log"]
    assert outcome["tasks"]["scale_in"] == "success"
    assert [e["exit_code"] for e in deployment.events("container_exited")] == [0, 2]
    assert desired_capacities(deployment)[-1] == 0


def test_scale_out_failing_half_way_skips_the_study_and_still_scales_in(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """The group grew, then a call the role may not make failed scale_out (twice: one retry)."""
    deployment = ecs_deployment()
    iam = deployment.client("iam")
    role = deployment.role_name("mwaa", "ExecutionRoleArn")
    document = deployment.role_policy(role, "windows-batch-dag")
    document["Statement"] = [
        s for s in document["Statement"] if s.get("Sid") != "DescribeOurContainerInstances"
    ]
    iam.put_role_policy(
        RoleName=role, PolicyName="windows-batch-dag", PolicyDocument=json.dumps(document)
    )
    outcome = run_dag(dag_env(airflow_env, deployment), STUDY)
    tasks = outcome["tasks"]
    assert outcome["state"] == "failed"
    assert tasks["scale_out"] == "failed"
    assert outcome["tries"]["scale_out"] == 2
    assert "ecs:DescribeContainerInstances" in outcome["log"]
    assert tasks["aggregate"] != "success"
    assert not deployment.events("run_task")  # neither a simulation nor the aggregate ran
    assert tasks["scale_in"] == "success"
    desired = desired_capacities(deployment)
    assert desired[0] == 2
    assert desired[-1] == 0
    groups = deployment.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[deployment.outputs["ecs"]["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    assert groups[0]["DesiredCapacity"] == 0
    assert groups[0]["Instances"] == []


STOPPED_BY_A_PERSON = "Stopped by a person in the ECS console"


def stop_task_after_result(deployment: EcsDeployment, key: str, stop: threading.Event) -> None:
    """Once the container writing `key` has written it (and is frozen: MOTO_FREEZE_ON_PUT),
    stop its ECS task from outside Airflow, as a person in the ECS console would."""
    bucket = deployment.outputs["storage"]["ResultsBucketName"]
    s3, ecs = deployment.client("s3"), deployment.client("ecs")
    while not stop.wait(0.1):
        frozen = deployment.events("container_frozen")
        if not frozen:
            continue
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError:
            continue
        cluster = deployment.outputs["ecs"]["ClusterName"]
        ecs.stop_task(cluster=cluster, task=frozen[0]["task_arn"], reason=STOPPED_BY_A_PERSON)
        return


def test_a_simulation_that_failed_after_writing_its_result_fails_the_run(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    """Its task was stopped from outside Airflow just after the container wrote its result, with
    no retry left: every result is there, the aggregate succeeds, but the run must not be green.
    (A host that went away instead runs the task again without a retry, which then reports the
    result it finds: tests/dags/test_windows_batch_compute_dag_ecs_deadlines.py.)"""
    key = f"sim/task_results/{RUN_ID}/task-00001.json"
    # The frozen container ignores SIGTERM until it is killed: keep ECS's stop timeout short.
    deployment = ecs_deployment(MOTO_FREEZE_ON_PUT=key, MOTO_CONTAINER_STOP_TIMEOUT_S="2")
    stop = threading.Event()
    watcher = threading.Thread(target=stop_task_after_result, args=(deployment, key, stop))
    watcher.start()
    try:
        env = dag_env(airflow_env, deployment, AIRFLOW__WINDOWS_BATCH__RETRIES="0")
        outcome = run_dag(env, STUDY, logical_date=LOGICAL_DATE)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert outcome["tasks"]["simulate[1]"] == "failed"
    assert STOPPED_BY_A_PERSON in outcome["log"]
    assert outcome["tasks"]["simulate[0]"] == "success"
    results = read_json(deployment, f"{output_prefix(outcome)}/results.json")
    assert results["missing_tasks"] == []
    assert outcome["state"] == "failed"
    assert outcome["tasks"]["aggregate"] == "failed"
    assert (
        "1 simulate task(s) failed although the aggregate found every task result" in outcome["log"]
    )
    assert outcome["tasks"]["scale_in"] == "success"
