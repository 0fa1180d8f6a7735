"""scale_out while the group replaces an instance, against the moto ECS server.

AWS's rules the server follows (moto_ecs_server.py, moto_ecs_faults.py MOTO_UNHEALTHY_INSTANCES):
"When Amazon EC2 Auto Scaling determines that an InService instance is unhealthy, it replaces
it" and "creates a new scaling activity for terminating the unhealthy instance and then
terminates it. While the instance is terminating, another scaling activity launches a new
instance" (EC2 Auto Scaling user guide: health checks; view the reason for health check
failures), so the group briefly has desired + 1 instances; "If you terminate a running
container instance, Amazon ECS automatically deregisters the instance" (ECS API reference,
DeregisterContainerInstance). Until the host is gone its agent may still be connected: ECS gets
no notice when Auto Scaling removes an instance (ECS guide, Spot Instance draining), so the
container instance stays ACTIVE and connected while its instance is Terminating.

The sensor's poke is called directly (one poke = one reschedule) instead of a dag.test run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from windows_batch import settings as settings_module
from windows_batch.cluster import ScaleOutSensor

from . import ecs_harness

pytestmark = pytest.mark.airflow


class XComSink:
    """What scale_out's task instance receives: remember_instances' XCom push."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, *, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_scale_out_waits_while_the_group_replaces_an_unhealthy_instance(
    ecs_deployment: Callable[..., ecs_harness.EcsDeployment],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = ecs_deployment(server=ecs_harness.FAULTS_SERVER, MOTO_UNHEALTHY_INSTANCES="1")
    for name, value in deployment.airflow_env(dict(os.environ)).items():
        monkeypatch.setenv(name, value)
    settings = settings_module.load()
    sensor = ScaleOutSensor(task_id="scale_out", desired=2, timeout_s=120, settings=settings)
    sink = XComSink()

    seen: list[str] = []
    for _ in range(10):
        done = sensor.poke({"ti": sink})
        seen.append(sensor.seen)
        if done:
            break
    assert done, seen

    [unhealthy] = [e["instance"] for e in deployment.events("unhealthy")]
    replaced = [e["instance"] for e in deployment.events("replace_instance")]
    assert replaced == [unhealthy]
    # What the successful poke was told (its ListContainerInstances, status ACTIVE): at least
    # 2 hosts with the agent connected that the group has InService and Healthy.
    answer = [e for e in deployment.events("list_container_instances") if e["status"]][-1]
    usable = {
        host["instance"]
        for host in answer["listed"]
        if host["connected"] and (host["lifecycle"], host["health"]) == ("InService", "Healthy")
    }
    assert len(usable) >= 2, answer
    assert unhealthy not in usable
    # Seen while waiting: the replacement, then the group above desired while it terminates.
    assert any(f"an instance is being replaced: {unhealthy} (" in s for s in seen[:-1]), seen
    assert any("3 instances for 2 desired" in s for s in seen), seen
    assert seen[-1].startswith("2 of 2 container instances ACTIVE with the agent connected")
    remembered = {i["instance_id"] for i in sink.pushed["container_instances"]}
    assert usable <= remembered

    # The group has the 2 it was told of in service, and the replaced one is terminated.
    group = deployment.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[settings.asg_name]
    )["AutoScalingGroups"][0]
    in_service = {i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"}
    assert in_service == usable
    state = deployment.client("ec2").describe_instances(InstanceIds=[unhealthy])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
