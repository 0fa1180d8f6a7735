"""The emulated ECS itself: a task's container is a real process that StopTask ends.

What the DAG's deadline and on_kill handling will rely on (ECS developer guide, StopTask: "a
SIGTERM value is sent ... If the container handles the SIGTERM value gracefully and exits within
30 seconds from receiving it, no SIGKILL value is sent"; Docker reports 128 + the signal).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from .ecs_harness import EcsDeployment

pytestmark = pytest.mark.airflow


def test_stop_task_ends_the_container_process_and_reports_its_exit(
    ecs_deployment: Callable[..., EcsDeployment],
) -> None:
    deployment = ecs_deployment(MOTO_CONTAINER_STOP_TIMEOUT_S="5")
    ecs_out = deployment.outputs["ecs"]
    cluster = ecs_out["ClusterName"]
    bucket = deployment.outputs["storage"]["ResultsBucketName"]
    deployment.client("autoscaling").set_desired_capacity(
        AutoScalingGroupName=ecs_out["AutoScalingGroupName"], DesiredCapacity=1
    )
    ecs = deployment.client("ecs")
    deployment.wait_for(
        "the instance to join",
        lambda: ecs.list_container_instances(cluster=cluster)["containerInstanceArns"],
    )
    command = ["simulate", "--ebn0-db", "0", "--max-bits", "1e9", "--seed", "1"]
    command += ["--output", f"s3://{bucket}/sim/stop/task-00000.json"]
    arn = ecs.run_task(
        cluster=cluster,
        taskDefinition=ecs_out["TaskDefinitionFamily"],
        launchType="EC2",
        overrides={"containerOverrides": [{"name": ecs_out["ContainerName"], "command": command}]},
    )["tasks"][0]["taskArn"]
    container = deployment.wait_for("the container", lambda: deployment.containers("sim/stop"))[0]
    task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    assert task["lastStatus"] == "RUNNING"
    assert task["desiredStatus"] == "RUNNING"
    assert task["containers"][0]["lastStatus"] == "RUNNING"

    ecs.stop_task(cluster=cluster, task=arn, reason="Task killed by the user")
    exited = deployment.wait_for("the container to exit", lambda: deployment.exited(arn))
    task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    assert task["lastStatus"] == "STOPPED"
    assert task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"] == "Task killed by the user"
    assert task["containers"][0]["exitCode"] == exited["exit_code"] == 128 + 15  # SIGTERM
    with pytest.raises(ProcessLookupError):
        os.killpg(container["pid"], 0)
