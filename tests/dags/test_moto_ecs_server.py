"""The emulated ECS itself: a task's container is a real process that StopTask ends.

What the DAG's deadline and on_kill handling will rely on (ECS developer guide, StopTask: "a
SIGTERM value is sent ... If the container handles the SIGTERM value gracefully and exits within
30 seconds from receiving it, no SIGKILL value is sent"; Docker reports 128 + the signal).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from .conftest import DAG_ID
from .ecs_harness import EcsDeployment

pytestmark = pytest.mark.airflow


def test_stop_task_ends_the_container_process_and_reports_its_exit(
    ecs_deployment: Callable[..., EcsDeployment],
) -> None:
    deployment = ecs_deployment(MOTO_CONTAINER_STOP_TIMEOUT_S="5")
    ecs_out = deployment.outputs["ecs"]
    cluster = ecs_out["ClusterName"]
    family = deployment.outputs[f"study:{DAG_ID}"]["TaskDefinitionFamily"]
    deployment.client("autoscaling").set_desired_capacity(
        AutoScalingGroupName=ecs_out["AutoScalingGroupName"], DesiredCapacity=1
    )
    ecs = deployment.client("ecs")
    deployment.wait_for(
        "the instance to join",
        lambda: ecs.list_container_instances(cluster=cluster)["containerInstanceArns"],
    )
    # The task runner's `exec`: one command as it is (what the images' smoke tests run).
    command = ["exec", "--", "sleep", "600"]
    definition = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    container_name = definition["containerDefinitions"][0]["name"]
    arn = ecs.run_task(
        cluster=cluster,
        taskDefinition=family,
        launchType="EC2",
        overrides={"containerOverrides": [{"name": container_name, "command": command}]},
    )["tasks"][0]["taskArn"]
    container = deployment.wait_for("the container", lambda: deployment.containers("sleep"))[0]
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
