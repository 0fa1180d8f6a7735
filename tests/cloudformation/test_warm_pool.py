"""ecs.yaml's warm pool (WarmPoolSize) and moto_server.py's emulation of the warm pool lifecycle.

AWS's rules encoded here:
- ECS developer guide, "Configuring pre-initialized instances for your Amazon ECS Auto Scaling
  group" (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using-warm-pool.html):
  "you cannot set the option that returns instances to the warm pool on scale in
  (ReuseOnScaleIn)"; "set the ECS_WARM_POOLS_CHECK agent configuration variable to true in the
  User data"; for Windows instances with the Stopped pool state, use Auto Scaling lifecycle
  hooks ("Using warm pools with Amazon ECS Windows instances").
- Auto Scaling user guide, "Use lifecycle hooks with a warm pool in Auto Scaling group"
  (https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html):
  "As soon as an instance finishes launching into the warm pool, Amazon EC2 Auto Scaling stops
  ... the instance ... does not wait for user data to finish running"; with an
  autoscaling:EC2_INSTANCE_LAUNCHING hook "newly launched instances pause ... when they reach
  the Warmed:Pending:Wait state, and then pause again when the instance is restarted and
  reaches the Pending:Wait state"; instances launched directly into the group (the pool is
  depleted) "only pause ... in the Pending:Wait state"; the hook's default result applies when
  no one completes the action before its heartbeat timeout.
- Auto Scaling user guide, "Decrease latency for applications with long boot times using warm
  pools": the pool's size is MaxGroupPreparedCapacity (default: the group's maximum) minus the
  desired capacity, at least MinSize; stopped instances bill only their volumes (and Elastic IP
  addresses); limitations: no Spot Instances.
- Auto Scaling user guide, "Amazon CloudWatch metrics for Amazon EC2 Auto Scaling":
  GroupInServiceInstances is "The number of instances that are running as part of the Auto
  Scaling group. This metric does not include instances that are pending or terminating"; the
  warm pool has its own metrics (WarmPool*, GroupAndWarmPool*).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import boto3
import moto_server  # loaded by tests/conftest.py
import pytest
from botocore.exceptions import ClientError
from moto.autoscaling.models import FakeAutoScalingGroup, autoscaling_backends

from ..conftest import REPO, load_module
from .test_spot import resolve
from .test_templates import REGION, aws, create_stack, load  # noqa: F401  (aws: fixture)

iam_policy = load_module("iam_policy", REPO / "tests" / "dags" / "iam_policy.py")

ACCOUNT = moto_server.ACCOUNT_ID
# The metrics Auto Scaling publishes that count warm pool instances (CloudWatch metrics page).
WARM_POOL_METRICS = {
    "WarmPoolDesiredCapacity",
    "WarmPoolWarmedCapacity",
    "WarmPoolPendingCapacity",
    "WarmPoolTerminatingCapacity",
    "WarmPoolTotalCapacity",
    "GroupAndWarmPoolDesiredCapacity",
    "GroupAndWarmPoolTotalCapacity",
}
# A Windows instance's first boot takes 15 minutes or more (EC2 Fast Launch documentation).
WINDOWS_FIRST_BOOT_S = 15 * 60


@pytest.fixture
def warm_aws(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    """test_templates' moto with the server's warm pool emulation and CloudFormation-like
    groups (monkeypatched: undone after the test)."""
    for target, name, value in moto_server.warm_pool_patches():
        monkeypatch.setattr(target, name, value, raising=False)
    monkeypatch.setattr(
        FakeAutoScalingGroup,
        "create_from_cloudformation_json",
        moto_server.mixed_instances_group_patch(),
    )
    return aws


def ecs_stack(cloudformation: Any, name: str, **parameters: str) -> dict[str, str]:
    network = create_stack(cloudformation, "network", f"{name}-network")
    return create_stack(
        cloudformation,
        "ecs",
        name,
        PrivateSubnetIds=network["PrivateSubnetIds"],
        InstanceSecurityGroupId=network["EcsInstanceSecurityGroupId"],
        **parameters,
    )


def steps(group: str, count: int) -> list[dict[str, str]]:
    """`count` DescribeWarmPool calls (one emulation step each): the pool's states after each."""
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    seen = []
    for _ in range(count):
        answer = autoscaling.describe_warm_pool(AutoScalingGroupName=group)
        seen.append({i["InstanceId"]: i["LifecycleState"] for i in answer["Instances"]})
    return seen


def group_steps(group: str, count: int) -> list[dict[str, str]]:
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    seen = []
    for _ in range(count):
        described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        instances = described["AutoScalingGroups"][0]["Instances"]
        seen.append({i["InstanceId"]: i["LifecycleState"] for i in instances})
    return seen


def ec2_states(ids: set[str]) -> set[str]:
    reservations = boto3.client("ec2", region_name=REGION).describe_instances(
        InstanceIds=sorted(ids)
    )["Reservations"]
    return {i["State"]["Name"] for r in reservations for i in r["Instances"]}


def activities(group: str) -> list[str]:
    answer = boto3.client("autoscaling", region_name=REGION).describe_scaling_activities(
        AutoScalingGroupName=group
    )
    return [a["Description"] for a in answer["Activities"]]


# --- The emulation -------------------------------------------------------------------------------


def test_the_pool_fills_warms_up_is_drawn_on_and_refills_as_the_user_guide_describes(
    warm_aws: Any,
) -> None:
    ecs = ecs_stack(warm_aws, "w-ecs", WarmPoolSize="2", MaxInstances="4")
    group = ecs["AutoScalingGroupName"]
    backend = autoscaling_backends[ACCOUNT][REGION]
    # Launched into the pool by the stack (MaxGroupPreparedCapacity 2 - desired 0).
    assert [s.lifecycle_state for s in backend.autoscaling_groups[group].warm_instances] == [
        "Warmed:Pending",
        "Warmed:Pending",
    ]
    pooled = set(steps(group, 1)[0])
    # Held by the launch hook until the user data completes it, then stopped.
    assert [set(s.values()) for s in steps(group, 3)] == [
        {"Warmed:Pending:Proceed"},
        {"Warmed:Stopped"},
        {"Warmed:Stopped"},
    ]
    assert ec2_states(pooled) == {"stopped"}
    description = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[group]
    )["AutoScalingGroups"][0]
    assert (description["Instances"], description["WarmPoolSize"]) == ([], 2)

    # Three wanted, two warmed: both start from the pool, one launches cold.
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(
        AutoScalingGroupName=group, DesiredCapacity=3
    )
    seen = group_steps(group, 4)
    (cold,) = set(seen[0]) - pooled
    assert set(seen[0]) >= pooled
    for instance in [*pooled, cold]:
        assert [s[instance] for s in seen] == [
            "Pending:Wait",
            "Pending:Proceed",
            "InService",
            "InService",
        ]
    assert ec2_states(pooled) == {"running"}
    launches = activities(group)
    assert f"Launching a new EC2 instance: {cold}" in launches
    for instance in pooled:
        assert f"Launching a new EC2 instance from warm pool: {instance}" in launches
        assert f"Launching a new EC2 instance into warm pool: {instance}" in launches
    # MaxGroupPreparedCapacity 2 - desired 3: the pool stays empty while the study runs.
    assert steps(group, 1) == [{}]

    # Scale-in terminates (no reuse) and the pool refills with new launches.
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(
        AutoScalingGroupName=group, DesiredCapacity=0
    )
    assert group_steps(group, 1) == [{}]
    assert ec2_states({*pooled, cold}) == {"terminated"}
    refilled = steps(group, 3)
    assert len(refilled[-1]) == 2
    assert not set(refilled[-1]) & {*pooled, cold}
    assert set(refilled[-1].values()) == {"Warmed:Stopped"}
    ended = activities(group)
    for instance in [*pooled, cold]:
        assert f"Terminating EC2 instance: {instance}" in ended


def put_group(
    *, user_data: str, hook_timeout_s: int = 1800, default_result: str = "CONTINUE"
) -> str:
    """A group of its own launch template, a launch hook and a warm pool of 1 (through the API)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    template = ec2.create_launch_template(
        LaunchTemplateName="lt",
        LaunchTemplateData={
            "ImageId": moto_server.FAKE_WINDOWS_AMI_ID,
            "InstanceType": "c5.xlarge",
            "UserData": base64.b64encode(user_data.encode()).decode(),
        },
    )["LaunchTemplate"]
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="g",
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"]},
        MinSize=0,
        MaxSize=2,
        AvailabilityZones=[f"{REGION}a"],
    )
    autoscaling.put_lifecycle_hook(
        AutoScalingGroupName="g",
        LifecycleHookName="ready",
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=hook_timeout_s,
        DefaultResult=default_result,
    )
    autoscaling.put_warm_pool(AutoScalingGroupName="g", MaxGroupPreparedCapacity=1)
    return "g"


COMPLETES = (
    "<powershell>\nComplete-ASLifecycleAction -AutoScalingGroupName g -LifecycleHookName ready "
    "-InstanceId $id -LifecycleActionResult CONTINUE\n</powershell>\n"
)


def test_user_data_that_runs_only_at_the_first_boot_leaves_the_start_from_the_pool_waiting(
    warm_aws: Any,
) -> None:
    """Without <persist> (EC2Launch runs user data at the first boot only) the instance leaving
    the pool is not released; CompleteLifecycleAction is what releases it then."""
    group = put_group(user_data=COMPLETES)
    (instance,) = steps(group, 3)[-1]
    assert steps(group, 1) == [{instance: "Warmed:Stopped"}]
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
    assert group_steps(group, 3) == [{instance: "Pending:Wait"}] * 3
    autoscaling.complete_lifecycle_action(
        AutoScalingGroupName=group,
        LifecycleHookName="ready",
        InstanceId=instance,
        LifecycleActionResult="CONTINUE",
    )
    assert group_steps(group, 1) == [{instance: "InService"}]
    with pytest.raises(ClientError, match="No active Lifecycle Action found"):
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="ready",
            InstanceId=instance,
            LifecycleActionResult="CONTINUE",
        )


def test_persisted_user_data_releases_both_pauses_by_itself(warm_aws: Any) -> None:
    group = put_group(user_data=COMPLETES + "<persist>true</persist>\n")
    (instance,) = steps(group, 3)[-1]
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(
        AutoScalingGroupName=group, DesiredCapacity=1
    )
    assert [s[instance] for s in group_steps(group, 3)] == [
        "Pending:Wait",
        "Pending:Proceed",
        "InService",
    ]


@pytest.mark.parametrize(
    ("default_result", "after"),
    [
        pytest.param("CONTINUE", "Warmed:Stopped", id="continue-goes-on"),
        pytest.param("ABANDON", "Warmed:Pending:Wait", id="abandon-terminates-and-relaunches"),
    ],
)
def test_an_action_no_one_completes_takes_the_default_result_after_the_heartbeat_timeout(
    warm_aws: Any, monkeypatch: pytest.MonkeyPatch, default_result: str, after: str
) -> None:
    group = put_group(user_data="<powershell>\n</powershell>\n", default_result=default_result)
    (instance,) = steps(group, 3)[-1]
    assert steps(group, 1) == [{instance: "Warmed:Pending:Wait"}]
    clock = moto_server._now()
    monkeypatch.setattr(moto_server, "_now", lambda: clock + 1800)
    final = steps(group, 3)[-1]
    assert list(final.values()) == [after]
    assert (instance in final) is (default_result == "CONTINUE")
    if default_result == "ABANDON":
        assert ec2_states({instance}) == {"terminated"}


def test_delete_warm_pool_and_the_stack_terminate_the_pool_instances(warm_aws: Any) -> None:
    """What `destroy --pause` relies on: no stopped instance (and its volume) is left behind."""
    ecs = ecs_stack(warm_aws, "d-ecs", WarmPoolSize="2")
    group = ecs["AutoScalingGroupName"]
    pooled = set(steps(group, 3)[-1])
    assert ec2_states(pooled) == {"stopped"}
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    # A pool that holds instances is deleted only with ForceDelete (user guide, "AWS CLI
    # examples for working with warm pools", Example 8).
    with pytest.raises(ClientError, match="ResourceInUse"):
        autoscaling.delete_warm_pool(AutoScalingGroupName=group)
    autoscaling.delete_warm_pool(AutoScalingGroupName=group, ForceDelete=True)
    # It returns "without waiting for all instances to be terminated" (API reference): the
    # pool is PendingDelete until they are, then gone.
    assert ec2_states(pooled) == {"stopped"}
    answer = autoscaling.describe_warm_pool(AutoScalingGroupName=group)
    assert answer["WarmPoolConfiguration"]["Status"] == "PendingDelete"
    assert ec2_states(pooled) == {"terminated"}
    assert "WarmPoolConfiguration" not in autoscaling.describe_warm_pool(AutoScalingGroupName=group)
    assert steps(group, 2) == [{}, {}]  # no refill
    again = ecs_stack(warm_aws, "e-ecs", WarmPoolSize="1")
    pooled = set(steps(again["AutoScalingGroupName"], 3)[-1])
    warm_aws.delete_stack(StackName="e-ecs")
    assert ec2_states(pooled) == {"terminated"}


def refreshes(group: str) -> list[dict[str, Any]]:
    """One DescribeInstanceRefreshes (one step of the refresh)."""
    answer = boto3.client("autoscaling", region_name=REGION).describe_instance_refreshes(
        AutoScalingGroupName=group
    )
    return list(answer["InstanceRefreshes"])


def versions(instances: list[dict[str, Any]]) -> dict[str, str]:
    return {i["InstanceId"]: i["LaunchTemplate"]["Version"] for i in instances}


def test_an_instance_refresh_with_skip_matching_replaces_the_old_instances_group_first(
    warm_aws: Any,
) -> None:
    """Instances keep the launch template version they were launched from ("existing
    instances are not affected"); a refresh with SkipMatching replaces only those that do not
    match the group's version, the group's first, then the pool's (user guide, "Update the
    instances in a warm pool" and "Use an instance refresh with skip matching")."""
    group = put_group(user_data=COMPLETES + "<persist>true</persist>\n")
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    autoscaling.put_warm_pool(AutoScalingGroupName=group, MaxGroupPreparedCapacity=2)
    autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
    group_steps(group, 3)
    described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    template_id = described["AutoScalingGroups"][0]["LaunchTemplate"]["LaunchTemplateId"]
    boto3.client("ec2", region_name=REGION).create_launch_template_version(
        LaunchTemplateId=template_id, SourceVersion="1", LaunchTemplateData={}
    )
    autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=group, LaunchTemplate={"LaunchTemplateId": template_id, "Version": "2"}
    )
    live = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    old_live = versions(live["AutoScalingGroups"][0]["Instances"])
    old_pool = versions(autoscaling.describe_warm_pool(AutoScalingGroupName=group)["Instances"])
    assert set(old_live.values()) == set(old_pool.values()) == {"1"}
    assert (len(old_live), len(old_pool)) == (1, 1)

    # RefreshPreferences: MaxHealthyPercentage needs a MinHealthyPercentage at most 100 below.
    with pytest.raises(ClientError, match="MinHealthyPercentage"):
        autoscaling.start_instance_refresh(
            AutoScalingGroupName=group, Preferences={"MaxHealthyPercentage": 150}
        )
    started = autoscaling.start_instance_refresh(
        AutoScalingGroupName=group,
        Preferences={"SkipMatching": True, "MinHealthyPercentage": 100},
    )["InstanceRefreshId"]
    with pytest.raises(ClientError, match="InstanceRefreshInProgress"):
        autoscaling.start_instance_refresh(AutoScalingGroupName=group)
    (refresh,) = refreshes(group)  # Pending -> InProgress
    assert (refresh["InstanceRefreshId"], refresh["Status"]) == (started, "InProgress")
    progress = refresh["ProgressDetails"]
    assert progress["LivePoolProgress"]["InstancesToUpdate"] == 1
    assert progress["WarmPoolProgress"]["InstancesToUpdate"] == 1
    (refresh,) = refreshes(group)  # the group's instance first
    assert ec2_states(set(old_live)) == {"terminated"}
    assert ec2_states(set(old_pool)) == {"stopped"}
    assert refresh["ProgressDetails"]["WarmPoolProgress"]["InstancesToUpdate"] == 1
    (refresh,) = refreshes(group)  # then the pool's
    assert ec2_states(set(old_pool)) == {"terminated"}
    (refresh,) = refreshes(group)
    assert (refresh["Status"], refresh["PercentageComplete"]) == ("Successful", 100)
    live = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    assert set(versions(live["AutoScalingGroups"][0]["Instances"]).values()) == {"2"}
    steps(group, 3)
    pooled = versions(autoscaling.describe_warm_pool(AutoScalingGroupName=group)["Instances"])
    assert set(pooled.values()) == {"2"}

    # Nothing left to replace: a new refresh with SkipMatching replaces nothing.
    autoscaling.start_instance_refresh(
        AutoScalingGroupName=group, Preferences={"SkipMatching": True}
    )
    assert [r["Status"] for r in refreshes(group)] == ["InProgress", "Successful"]
    assert refreshes(group)[0]["Status"] == "Successful"
    assert versions(autoscaling.describe_warm_pool(AutoScalingGroupName=group)["Instances"]) == (
        pooled
    )
    # A cancelled refresh goes Cancelling, then Cancelled.
    autoscaling.start_instance_refresh(AutoScalingGroupName=group)
    assert autoscaling.cancel_instance_refresh(AutoScalingGroupName=group)["InstanceRefreshId"]
    assert refreshes(group)[0]["Status"] == "Cancelled"
    with pytest.raises(ClientError, match="ActiveInstanceRefreshNotFound"):
        autoscaling.cancel_instance_refresh(AutoScalingGroupName=group)


# --- The template ---------------------------------------------------------------------------------


def rendered_user_data(stack: dict[str, str]) -> str:
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    group = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    template_id = group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"][
        "LaunchTemplateId"
    ]
    data = boto3.client("ec2", region_name=REGION).describe_launch_template_versions(
        LaunchTemplateId=template_id
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    return base64.b64decode(data["UserData"]).decode()


def test_the_switch_adds_the_pool_the_hook_and_the_policy_only_with_a_size(
    warm_aws: Any,
) -> None:
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    for stack, size in (("off-ecs", "0"), ("on-ecs", "3")):
        outputs = ecs_stack(warm_aws, stack, WarmPoolSize=size)
        group = outputs["AutoScalingGroupName"]
        assert outputs["WarmPoolSize"] == size
        assert outputs["RootVolumeSizeInGiB"] == "100"
        pool = autoscaling.describe_warm_pool(AutoScalingGroupName=group)
        hooks = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
        role = warm_aws.describe_stack_resource(StackName=stack, LogicalResourceId="InstanceRole")[
            "StackResourceDetail"
        ]["PhysicalResourceId"]
        policies = iam.list_role_policies(RoleName=role)["PolicyNames"]
        user_data = rendered_user_data(outputs)
        if size == "0":
            assert "WarmPoolConfiguration" not in pool
            assert (hooks, policies) == ([], [])
            assert '"ECS_WARM_POOLS_CHECK", "false", "Machine"' in user_data
            continue
        assert pool["WarmPoolConfiguration"] == {
            "MaxGroupPreparedCapacity": 3,
            "MinSize": 0,
            "PoolState": "Stopped",
        }
        (hook,) = hooks
        assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
        assert policies == ["complete-the-launch-hook"]
        assert '"ECS_WARM_POOLS_CHECK", "true", "Machine"' in user_data
        # The user data completes exactly this hook of exactly this group, in this Region.
        (complete,) = re.findall(r"Complete-ASLifecycleAction .*", user_data)
        assert f'-AutoScalingGroupName "{group}"' in complete
        assert f'-LifecycleHookName "{hook["LifecycleHookName"]}"' in complete
        assert f'-Region "{REGION}"' in complete
        assert "-LifecycleActionResult CONTINUE" in complete


def test_user_data_sets_the_warm_pools_check_before_the_agent_and_completes_the_hook_after_it() -> (
    None
):
    sub = load("ecs")["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"][
        "UserData"
    ]["Fn::Base64"]["Fn::Sub"]
    text, variables = sub
    initialize = text.index("Initialize-ECSAgent")
    assert text.index('SetEnvironmentVariable("ECS_WARM_POOLS_CHECK"') < initialize
    # Completing first would let Auto Scaling stop the instance while the agent is set up.
    assert text.index("Complete-ASLifecycleAction") > initialize
    # EC2Launch runs it at every boot: the start from the pool completes its Pending:Wait too.
    assert text.rstrip().endswith("<persist>true</persist>")
    assert variables["WarmPoolsCheck"] == {"Fn::If": ["HasWarmPool", "true", "false"]}
    hook = load("ecs")["Resources"]["LaunchLifecycleHook"]
    assert variables["LaunchHookName"] == hook["Properties"]["LifecycleHookName"]
    # The group name the script completes the hook on is the group's own name.
    group = load("ecs")["Resources"]["AutoScalingGroup"]["Properties"]["AutoScalingGroupName"]
    assert '-AutoScalingGroupName "' + group["Fn::Sub"] + '"' in text


def test_the_pool_and_the_hook_follow_the_ecs_rules_for_windows() -> None:
    template = load("ecs")
    pool = template["Resources"]["WarmPool"]
    hook = template["Resources"]["LaunchLifecycleHook"]
    assert pool["Condition"] == hook["Condition"] == "HasWarmPool"
    properties = pool["Properties"]
    # ECS: no ReuseOnScaleIn; Stopped: only the volumes bill.
    assert "InstanceReusePolicy" not in properties
    assert properties["PoolState"] == "Stopped"
    assert properties["MaxGroupPreparedCapacity"] == {"Ref": "WarmPoolSize"}
    assert properties["MinSize"] == 0
    # The hook must exist before the first instance launches into the pool.
    assert pool["DependsOn"] == "LaunchLifecycleHook"
    hook_properties = hook["Properties"]
    assert hook_properties["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert hook_properties["AutoScalingGroupName"] == {"Ref": "AutoScalingGroup"}
    # Longer than a Windows first boot; going on (not terminating) when no one completes it.
    assert hook_properties["HeartbeatTimeout"] > WINDOWS_FIRST_BOOT_S
    assert hook_properties["DefaultResult"] == "CONTINUE"
    parameter = template["Parameters"]["WarmPoolSize"]
    assert (parameter["Default"], parameter["MinValue"]) == (0, 0)
    conditions = template["Conditions"]
    assert resolve({"Condition": "HasWarmPool"}, {"WarmPoolSize": 0}, conditions) is False
    assert resolve({"Condition": "HasWarmPool"}, {"WarmPoolSize": 4}, conditions) is True


@pytest.mark.parametrize(
    ("size", "purchase", "holds"),
    [
        pytest.param("0", "spot", True, id="no-pool-spot"),
        pytest.param("2", "on-demand", True, id="pool-on-demand"),
        pytest.param("2", "spot", False, id="pool-spot-refused"),
    ],
)
def test_a_warm_pool_is_refused_with_spot(size: str, purchase: str, holds: bool) -> None:
    template = load("ecs")
    rule = template["Rules"]["WarmPoolIsOnDemand"]
    parameters = {"WarmPoolSize": size, "PurchaseOption": purchase}
    applies = resolve(rule["RuleCondition"], parameters, template["Conditions"])
    held = all(resolve(a["Assert"], parameters, template["Conditions"]) for a in rule["Assertions"])
    assert (not applies or held) is holds


def test_the_instance_role_may_complete_lifecycle_actions_of_its_own_group_only() -> None:
    template = load("ecs")
    policies = template["Resources"]["InstanceRole"]["Properties"]["Policies"]
    condition, with_pool, without = policies["Fn::If"]
    assert (condition, without) == ("HasWarmPool", {"Ref": "AWS::NoValue"})
    (statement,) = with_pool[0]["PolicyDocument"]["Statement"]
    arn = statement["Resource"]["Fn::Sub"]
    for name, value in (
        ("AWS::Partition", "aws"),
        ("AWS::Region", REGION),
        ("AWS::AccountId", ACCOUNT),
        ("AWS::StackName", "w-ecs"),
    ):
        arn = arn.replace("${" + name + "}", value)
    statement = {**statement, "Resource": arn}
    ours = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0a1b:autoScalingGroupName/"
    for group, allowed in (("w-ecs-instances", True), ("someone-else", False)):
        for action, expected in (
            ("autoscaling:CompleteLifecycleAction", allowed),
            ("autoscaling:SetDesiredCapacity", False),
        ):
            decision = iam_policy.evaluate([statement], iam_policy.Request(action, ours + group))
            assert (decision == iam_policy.ALLOW) is expected, (group, action)


# --- The idle alarm and the pool ------------------------------------------------------------------


def metric_math(expression: str, values: dict[str, float | None]) -> float:
    """CloudWatch metric math's IF(c, a, b), FILL(m, v), AND, >, == for one data point."""
    python = re.sub(r"FILL\((\w+), (\w+)\)", r"(\1 if \1 is not None else \2)", expression)
    python = python.replace(" AND ", " and ")
    match = re.fullmatch(r"IF\((.*), (\S+), (\S+)\)", python)
    assert match, expression
    condition, yes, no = match.groups()
    return float(yes if eval(condition, {}, dict(values)) else no)  # noqa: S307 (our template)


def test_the_idle_alarm_never_counts_a_stopped_pool_instance_as_idle_capacity(
    warm_aws: Any,
) -> None:
    ecs = ecs_stack(warm_aws, "i-ecs", WarmPoolSize="2")
    group = ecs["AutoScalingGroupName"]
    template = load("ecs")
    alarm = template["Resources"]["IdleClusterAlarm"]["Properties"]
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    metric = queries["instances"]["MetricStat"]["Metric"]["MetricName"]
    assert metric == "GroupInServiceInstances"
    collected = template["Resources"]["AutoScalingGroup"]["Properties"]["MetricsCollection"]
    assert not {m for c in collected for m in c["Metrics"]} & WARM_POOL_METRICS
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    for pool in steps(group, 3):  # warming up (running), then stopped
        described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        instances = described["AutoScalingGroups"][0]["Instances"]
        in_service = sum(1 for i in instances if i["LifecycleState"] == "InService")
        # No task runs (no CPUReservation point) and no scale-out is under way (no heartbeat):
        # idle only if something is in service.
        quiet = {"tasks": None, "scaling": None}
        value = metric_math(queries["idle"]["Expression"], {"instances": in_service, **quiet})
        assert (len(pool), value) == (2, 0.0)
        # Had the alarm read the group and its pool together, the stopped pool would look idle.
        total = in_service + len(pool)
        assert metric_math(queries["idle"]["Expression"], {"instances": total, **quiet}) == 1


# --- EC2 Fast Launch sized to the group --------------------------------------------------------


def test_fast_launch_keeps_a_snapshot_for_every_instance_the_group_may_launch_at_once() -> None:
    """Each launch of the baked AMI uses one pre-provisioned snapshot, and EC2 makes another
    with at most MaxParallelLaunches instances at once (EC2 User Guide, EC2 Fast Launch): with
    one per instance of the group's maximum, a full scale-out, or the refill of a full warm
    pool, launches fast, and the parallel launches make them all again in one round."""
    ami = load("ami")["Parameters"]
    ecs = load("ecs")["Parameters"]
    count, parallel = ami["FastLaunchSnapshotCount"], ami["FastLaunchMaxParallelLaunches"]
    assert count["Default"] == ecs["MaxInstances"]["Default"]
    assert count["MaxValue"] >= ecs["MaxInstances"]["MaxValue"]
    assert parallel["Default"] >= count["Default"]
    for text in (count["Description"], parallel["Description"]):
        assert "MaxInstances" in text
