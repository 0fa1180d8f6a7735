"""scale_out with the ECS group's warm pool: full, partly empty, none; against the moto ECS server.

The server emulates the warm pool lifecycle the EC2 Auto Scaling user guide describes ("Use
lifecycle hooks with a warm pool in Auto Scaling group",
https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html;
tests/cloudformation/moto_server.py): instances launched into the pool pause in
Warmed:Pending:Wait until their user data completes the launch hook, are then stopped; a
scale-out starts them (Pending, Pending:Wait, InService) and launches cold what the pool cannot
cover ("If the warm pool is depleted ... instances launch directly into the Auto Scaling group",
the "Launching a new EC2 instance: ..." activity; "... from warm pool: ..." for the others). The
emulated instance completes its hook only as its user data does: the launch template's
Complete-ASLifecycleAction for that hook, at every boot only with <persist>true</persist>, and
only if its instance role may (tests/dags/moto_ecs_server.py, instance_role_allows). The ECS agent
registers an instance once the group has it InService (ECS_WARM_POOLS_CHECK: "the agent checks
whether the instance is in the warm pool" before registering, ECS developer guide,
"Configuring pre-initialized instances for your Amazon ECS Auto Scaling group").

The sensor's poke is called directly (one poke = one reschedule), as test_scale_out_replacement.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from windows_batch import cost_report
from windows_batch import settings as settings_module
from windows_batch.cluster import ScaleOutSensor

from . import ecs_harness
from .test_scale_out_replacement import XComSink

pytestmark = pytest.mark.airflow

WARMED = "Warmed:Stopped"


def pool_states(deployment: ecs_harness.EcsDeployment, group: str) -> dict[str, str]:
    answer = deployment.client("autoscaling").describe_warm_pool(AutoScalingGroupName=group)
    return {i["InstanceId"]: i["LifecycleState"] for i in answer["Instances"]}


def warmed_pool(deployment: ecs_harness.EcsDeployment, group: str, size: int) -> set[str]:
    """Step the pool (each DescribeWarmPool is one step) until `size` instances are stopped."""
    for _ in range(10):
        states = pool_states(deployment, group)
        if len(states) == size and set(states.values()) == {WARMED}:
            return set(states)
    raise AssertionError(f"the pool did not warm up: {states}")


def scale_out(
    deployment: ecs_harness.EcsDeployment, monkeypatch: pytest.MonkeyPatch, desired: int
) -> tuple[ScaleOutSensor, XComSink, list[str]]:
    """Poke a ScaleOutSensor with the DAG's settings until the cluster is complete."""
    for name, value in deployment.airflow_env(dict(os.environ)).items():
        monkeypatch.setenv(name, value)
    sensor = ScaleOutSensor(
        task_id="scale_out", desired=desired, timeout_s=120, settings=settings_module.load()
    )
    sink = XComSink()
    seen: list[str] = []
    for _ in range(20):
        done = sensor.poke({"ti": sink})  # type: ignore[arg-type]
        seen.append(sensor.seen)
        if done:
            return sensor, sink, seen
    raise AssertionError(seen)


def in_service(deployment: ecs_harness.EcsDeployment, group: str) -> set[str]:
    described = deployment.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group]
    )["AutoScalingGroups"][0]
    return {i["InstanceId"] for i in described["Instances"] if i["LifecycleState"] == "InService"}


@pytest.mark.parametrize(
    ("pool_size", "desired", "warm"),
    [
        pytest.param(3, 2, 2, id="full-pool"),
        pytest.param(1, 3, 1, id="partly-empty-pool"),
    ],
)
def test_scale_out_starts_the_pool_first_and_launches_the_rest_cold(
    ecs_deployment: Callable[..., ecs_harness.EcsDeployment],
    monkeypatch: pytest.MonkeyPatch,
    pool_size: int,
    desired: int,
    warm: int,
) -> None:
    cold = desired - warm
    deployment = ecs_deployment(ecs_parameters={"WarmPoolSize": str(pool_size)})
    group = deployment.outputs["ecs"]["AutoScalingGroupName"]
    assert deployment.settings["AIRFLOW__WINDOWS_BATCH__WARM_POOL_SIZE"] == str(pool_size)
    pooled = warmed_pool(deployment, group, pool_size)
    # Stopped in EC2: a pool instance bills only its volume, and no agent registered it.
    ec2 = deployment.client("ec2")
    described = ec2.describe_instances(InstanceIds=sorted(pooled))["Reservations"]
    assert {i["State"]["Name"] for r in described for i in r["Instances"]} == {"stopped"}
    cluster = deployment.outputs["ecs"]["ClusterName"]
    ecs = deployment.client("ecs")
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []

    _, sink, seen = scale_out(deployment, monkeypatch, desired)

    ready = in_service(deployment, group)
    assert len(ready) == desired
    assert len(ready & pooled) == warm
    # The wait followed the lifecycle: an instance held by the launch hook was not counted.
    assert any("Pending:Wait" in s for s in seen[:-1]), seen
    assert seen[-1].startswith(f"{desired} of {desired} container instances ACTIVE")
    assert (
        f"warm pool: {warm} of {desired} instances started from it, {cold} launched cold"
        in (seen[-1])
    )
    # The container instances are the InService ones, and the time the scale-out began is kept.
    remembered = {i["instance_id"] for i in sink.pushed[cost_report.INSTANCES_KEY]}
    assert remembered == ready
    assert isinstance(sink.pushed[cost_report.SCALE_OUT_AT_KEY], float)
    # What the pool cannot cover stays covered: MaxGroupPreparedCapacity - desired, at least 0.
    left = pool_states(deployment, group)
    assert len(left) == max(0, pool_size - desired)
    # Each instance completed its own hooks, as its instance role allows.
    completions = [
        d for d in deployment.iam_decisions() if d["call"] == "autoscaling:CompleteLifecycleAction"
    ]
    assert completions
    assert {d["decision"] for d in completions} == {"Allow"}


def test_scale_out_without_a_pool_launches_cold_and_never_asks_for_one(
    ecs_deployment: Callable[..., ecs_harness.EcsDeployment],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = ecs_deployment()
    group = deployment.outputs["ecs"]["AutoScalingGroupName"]
    assert deployment.settings["AIRFLOW__WINDOWS_BATCH__WARM_POOL_SIZE"] == "0"
    _, _, seen = scale_out(deployment, monkeypatch, 2)
    assert len(in_service(deployment, group)) == 2
    assert "warm pool" not in seen[-1]
    calls = {d["call"] for d in deployment.iam_decisions()}
    assert "autoscaling:DescribeWarmPool" not in calls
    hooks = deployment.client("autoscaling").describe_lifecycle_hooks(AutoScalingGroupName=group)
    assert hooks["LifecycleHooks"] == []


def test_a_pool_instance_whose_role_may_not_complete_the_hook_is_not_stopped_half_set_up(
    ecs_deployment: Callable[..., ecs_harness.EcsDeployment],
) -> None:
    """Without autoscaling:CompleteLifecycleAction the instance's user data cannot release the
    hook: the instance waits in Warmed:Pending:Wait (until HeartbeatTimeout) instead of going
    to Warmed:Stopped; the policy the template gives the role is what lets it through."""
    deployment = ecs_deployment(ecs_parameters={"WarmPoolSize": "1"})
    group = deployment.outputs["ecs"]["AutoScalingGroupName"]
    cloudformation = deployment.client("cloudformation")
    role = cloudformation.describe_stack_resource(
        StackName=f"{ecs_harness.PREFIX}-ecs", LogicalResourceId="InstanceRole"
    )["StackResourceDetail"]["PhysicalResourceId"]
    iam = deployment.client("iam")
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["complete-the-launch-hook"]
    iam.delete_role_policy(RoleName=role, PolicyName="complete-the-launch-hook")
    for _ in range(5):
        states = pool_states(deployment, group)
    assert list(states.values()) == ["Warmed:Pending:Wait"]
    denied = [
        d for d in deployment.iam_decisions() if d["call"] == "autoscaling:CompleteLifecycleAction"
    ]
    assert denied
    assert {d["decision"] for d in denied} == {"ImplicitDeny"}
