"""--warm-pool against the moto server's warm pools and instance refreshes (its docstring): the
pool deployed, kept on a re-run and removed with 0; refused with Spot or above --max-instances
before anything changes; what --check says it bills; a launch template change refreshes it;
destroy and pause delete it and wait for its instances before the group goes.

AWS's rules encoded here (deployer/warm_pool.py has the quotes):
- Auto Scaling user guide, "Decrease latency for applications with long boot times using warm
  pools" (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-pools.html):
  limitations (On-Demand only), "Update the instances in a warm pool" (new launch template
  versions leave existing instances; an instance refresh replaces the group's, then the pool's).
- "Use an instance refresh with skip matching"
  (https://docs.aws.amazon.com/autoscaling/ec2/userguide/asg-instance-refresh-skip-matching.html).
- API reference, RefreshPreferences (MinHealthyPercentage 100: one instance at a time) and
  DeleteWarmPool (ForceDelete returns without waiting for the instances to terminate); user
  guide, "AWS CLI examples for working with warm pools", Example 8 (a pool holding instances
  needs ForceDelete).
- API reference, WarmPoolConfiguration: MaxGroupPreparedCapacity counts the pool and the group.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .test_deploy import step_results

CHECK_HEADER = ("check", "state", "detail")


def tiny_image(deployer: Any, prefix: str) -> tuple[str, ...]:
    """The one study's image given: nothing to build."""
    return ("--prefix", prefix, "--skip", "mwaa", "--image-uri", "tiny=example.com/tiny:1")


def group_of(deployer: Any, prefix: str) -> str:
    return deployer.outputs(f"{prefix}-ecs")["AutoScalingGroupName"]


def pool(deployer: Any, group: str, *, steps: int = 1) -> dict[str, Any]:
    """DescribeWarmPool after `steps` calls (each takes one step of Auto Scaling's clock)."""
    autoscaling = deployer.client("autoscaling")
    for _ in range(steps):
        answer = autoscaling.describe_warm_pool(AutoScalingGroupName=group)
    return dict(answer)


def pool_instances(deployer: Any, group: str, *, steps: int = 1) -> dict[str, str]:
    """{instance ID: launch template version} of the pool's instances."""
    return {
        i["InstanceId"]: i["LaunchTemplate"]["Version"]
        for i in pool(deployer, group, steps=steps)["Instances"]
    }


def ec2_states(deployer: Any, ids: set[str]) -> dict[str, str]:
    reservations = deployer.client("ec2").describe_instances(InstanceIds=sorted(ids))
    return {
        i["InstanceId"]: i["State"]["Name"]
        for r in reservations["Reservations"]
        for i in r["Instances"]
    }


def ecs_parameter(deployer: Any, prefix: str, name: str) -> str:
    (stack,) = deployer.client("cloudformation").describe_stacks(StackName=f"{prefix}-ecs")[
        "Stacks"
    ]
    return next(p["ParameterValue"] for p in stack["Parameters"] if p["ParameterKey"] == name)


def test_a_pool_of_2_is_deployed_kept_by_a_rerun_that_changes_nothing_and_removed_with_0(
    one_study: Any,
) -> None:
    deployer = one_study
    prefix = deployer.prefix()
    args = tiny_image(deployer, prefix)
    first = deployer.deploy(*args, "--warm-pool", "2")
    assert first.code == 0, first.text
    assert "2 stopped instance(s) (c5.xlarge, On-Demand)" in first.line("warm pool")
    ecs = deployer.outputs(f"{prefix}-ecs")
    assert (ecs["WarmPoolSize"], ecs["RootVolumeSizeInGiB"]) == ("2", "100")
    group = ecs["AutoScalingGroupName"]
    settings = pool(deployer, group)["WarmPoolConfiguration"]
    assert (settings["MaxGroupPreparedCapacity"], settings["PoolState"]) == (2, "Stopped")
    warmed = pool_instances(deployer, group, steps=3)
    assert len(warmed) == 2
    assert set(ec2_states(deployer, set(warmed)).values()) == {"stopped"}

    # Not given: the ECS stack's pool is kept, and nothing changes (no refresh either).
    again = deployer.deploy(*args)
    assert again.code == 0, again.text
    assert f"Warm pool of 2 (kept from stack {prefix}-ecs)" in again.out
    results = step_results(again.out)
    assert results.pop("Preflight (changes nothing)") == "ok"
    assert set(results.values()) == {"no changes"}, results
    assert "Instance refresh" not in again.out
    assert pool_instances(deployer, group) == warmed

    # Kept with an option that cannot have it: refused before any change, naming the option.
    kept = f"the warm pool of 2 (kept from stack {prefix}-ecs; --warm-pool 0 removes it)"
    spot = deployer.deploy(*args, "--spot")
    assert spot.code == 1
    assert f"{kept} with --spot: EC2 Auto Scaling warm pools take no Spot" in spot.line("warm pool")
    small = deployer.deploy(*args, "--max-instances", "1")
    assert small.code == 1
    assert f"{kept} > --max-instances 1" in small.line("warm pool")
    for refused in (spot, small):
        assert "preflight: 1 blocker(s) above; nothing was changed" in refused.err
    assert ecs_parameter(deployer, prefix, "PurchaseOption") == "on-demand"
    assert ecs_parameter(deployer, prefix, "MaxInstances") == "10"

    check = deployer.deploy(*args, "--warm-pool", "0", "--check")
    assert f"--warm-pool 0: the pool of 2 of {prefix}-ecs" in check.line("warm pool")
    removed = deployer.deploy(*args, "--warm-pool", "0")
    assert removed.code == 0, removed.text
    assert step_results(removed.out)[f"Stack {prefix}-ecs"] == "updated"
    assert deployer.outputs(f"{prefix}-ecs")["WarmPoolSize"] == "0"
    assert "WarmPoolConfiguration" not in pool(deployer, group)
    assert set(ec2_states(deployer, set(warmed)).values()) == {"terminated"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            ("--warm-pool", "2", "--spot"),
            "--warm-pool 2 with --spot: EC2 Auto Scaling warm pools take no Spot Instances",
            id="spot",
        ),
        pytest.param(
            ("--warm-pool", "11"),
            "--warm-pool 11 > --max-instances 10: the group never takes more than its maximum",
            id="above-max",
        ),
        pytest.param(
            ("--warm-pool", "4", "--max-instances", "3"),
            "--warm-pool 4 > --max-instances 3",
            id="above-a-lower-max",
        ),
    ],
)
def test_a_pool_the_group_cannot_have_is_refused_by_the_preflight_naming_the_option(
    one_study: Any, options: tuple[str, ...], message: str
) -> None:
    """Before any stack: ecs.yaml's Rule would refuse Spot only once the update had begun."""
    deployer = one_study
    prefix = deployer.prefix()
    result = deployer.deploy(*tiny_image(deployer, prefix), *options)
    assert result.code == 1, result.text
    row = result.line("warm pool")
    assert "BLOCKER" in row.split()
    assert message in row
    assert "preflight: 1 blocker(s) above; nothing was changed" in result.err
    assert deployer.stacks(prefix) == {}


def test_a_pool_size_that_is_not_a_whole_number_is_refused(one_study: Any) -> None:
    result = one_study.deploy("--warm-pool", "two")
    assert result.code == 1
    assert "deploy.sh: error: --warm-pool must be a whole number: two" in result.err


def test_check_shows_the_pool_its_volumes_what_it_bills_idle_and_the_quota_counting_it(
    one_study: Any,
) -> None:
    """The engine's cost model (cost.pool_use): 2 x 100 GiB x 0.08 USD/GB-month / 730 h =
    0.0219 USD/h; a full refill is 2 cold boots of 900 s (315 s with the baked AMI) at the
    on-demand c5.xlarge price, 0.354 USD/h."""
    deployer = one_study
    prefix = deployer.prefix()
    check = (*tiny_image(deployer, prefix), "--check")
    fresh = deployer.deploy(*check, "--warm-pool", "2")
    assert fresh.code == 0, fresh.text
    assert fresh.line("warm pool").split(None, 3)[2:] == [
        "ok",
        "2 stopped instance(s) (c5.xlarge, On-Demand) with 2 x 100 GiB gp3 EBS (200 GiB): "
        "about $0.022/h idle ($16.00 a month at 0.08 USD/GB-month); a study that starts all 2 "
        "from it adds a refill of 2 x 15.0 min cold boot, about $0.18 (us-east-1 2025 table)",
    ]
    # Its instances are On-Demand and run while they start: within the group's maximum.
    assert (
        "64 vCPUs (L-1216C47A) >= 40 needed (10 x c5.xlarge On-Demand, the warm pool's 2 "
        "among them while they start)"
    ) in fresh.line("vCPU quota")
    baked = deployer.deploy(*check, "--warm-pool", "2", "--bake-ami")
    assert "refill of 2 x 5.2 min cold boot, about $0.06" in baked.line("warm pool")
    assert "none (--warm-pool N keeps N instances stopped" in deployer.deploy(*check).line(
        "warm pool"
    )

    # An ECS stack with a larger root volume and a pool of 3: a re-run keeps the pool and
    # prices the stack's volumes.
    cloudformation = deployer.client("cloudformation")
    cloudformation.create_stack(
        StackName=f"{prefix}-network",
        TemplateBody=deployer.project.template("network").read_text(),
    )
    network = deployer.outputs(f"{prefix}-network")
    parameters = {
        "PrivateSubnetIds": network["PrivateSubnetIds"],
        "InstanceSecurityGroupId": network["EcsInstanceSecurityGroupId"],
        "RootVolumeSizeInGiB": "150",
        "WarmPoolSize": "3",
    }
    cloudformation.create_stack(
        StackName=f"{prefix}-ecs",
        TemplateBody=deployer.project.template("ecs").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    kept = deployer.deploy(*check)
    assert kept.code == 0, kept.text
    assert f"Warm pool of 3 (kept from stack {prefix}-ecs)" in kept.out
    assert (
        "3 stopped instance(s) (c5.xlarge, On-Demand) with 3 x 150 GiB gp3 EBS (450 GiB): "
        "about $0.049/h idle ($36.00 a month"
    ) in kept.line("warm pool")


def started_refreshes(deployer: Any, group: str) -> list[dict[str, Any]]:
    return list(
        deployer.client("autoscaling").describe_instance_refreshes(AutoScalingGroupName=group)[
            "InstanceRefreshes"
        ]
    )


def test_a_launch_template_change_refreshes_the_pool_once_no_study_runs_and_not_again(
    one_study: Any,
) -> None:
    """A new baked AMI is a new launch template version: the pool's instances keep the old one
    until an instance refresh (SkipMatching) replaces them; it is started, not awaited."""
    deployer = one_study
    prefix = deployer.prefix()
    args = tiny_image(deployer, prefix)
    first = deployer.deploy(*args, "--warm-pool", "2")
    assert first.code == 0, first.text
    group = group_of(deployer, prefix)
    old = pool_instances(deployer, group, steps=3)
    assert set(old.values()) == {"1"}
    autoscaling = deployer.client("autoscaling")

    # A study runs (one instance from the pool) while the AMI changes: no refresh now.
    autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
    baked = deployer.deploy(*args, "--bake-ami")
    assert baked.code == 0, baked.text
    assert (
        step_results(baked.out)[f"Instance refresh of {group}"] == "not started while a study runs"
    )
    assert "has 1 instance(s) in use (a study runs): a refresh would terminate them" in baked.err
    assert started_refreshes(deployer, group) == []

    # After the study, the next deploy finds the pool's old instances and starts the refresh.
    autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=0)
    stale = pool_instances(deployer, group, steps=3)
    assert sorted(stale.values()) == ["1", "2"]  # the refill launched from the new version
    after = deployer.deploy(*args)
    assert after.code == 0, after.text
    line = next(line for line in after.out.splitlines() if "Instance refresh of" in line)
    assert line.startswith(f"==> Instance refresh of {group}: ")
    assert "started, not awaited" in line
    assert "1 of the warm pool's 2 instance(s) were launched from launch template " in after.out
    assert "version 1; the group now launches version 2" in after.out
    (refresh,) = started_refreshes(deployer, group)
    assert refresh["InstanceRefreshId"] in line
    assert refresh["Preferences"]["SkipMatching"] is True
    assert refresh["Preferences"]["MinHealthyPercentage"] == 100
    # Only the instance launched from version 1 is replaced; the group has none.
    assert refresh["ProgressDetails"]["WarmPoolProgress"]["InstancesToUpdate"] == 1
    assert refresh["ProgressDetails"]["LivePoolProgress"]["InstancesToUpdate"] == 0

    # While it runs, a deploy does not start another.
    during = deployer.deploy(*args)
    assert during.code == 0, during.text
    assert "already; not started again" in during.out
    # Each DescribeInstanceRefreshes is one step of Auto Scaling's clock here.
    statuses = [started_refreshes(deployer, group)[0]["Status"] for _ in range(3)]
    assert statuses[-1] == "Successful", statuses
    refreshed = pool_instances(deployer, group, steps=3)
    assert set(refreshed.values()) == {"2"}
    (old_one,) = [i for i, version in stale.items() if version == "1"]
    assert old_one not in refreshed
    assert ec2_states(deployer, {old_one}) == {old_one: "terminated"}

    done = deployer.deploy(*args)
    assert done.code == 0, done.text
    assert "Instance refresh" not in done.out
    assert len(started_refreshes(deployer, group)) == 1


@pytest.mark.parametrize(
    "pausing", [pytest.param(False, id="destroy"), pytest.param(True, id="pause")]
)
def test_destroy_and_pause_delete_the_pool_and_wait_for_its_instances_before_the_group_goes(
    one_study: Any, pausing: bool
) -> None:
    """A pool that holds stopped instances, and a refresh still replacing them: the refresh is
    cancelled, the pool deleted with ForceDelete, and its instances are terminated before the
    group is scaled to 0 (scaling first would launch a refill into the pool)."""
    deployer = one_study
    prefix = deployer.prefix()
    first = deployer.deploy(*tiny_image(deployer, prefix), "--warm-pool", "2")
    assert first.code == 0, first.text
    group = group_of(deployer, prefix)
    warmed = set(pool_instances(deployer, group, steps=3))
    autoscaling = deployer.client("autoscaling")
    refresh = autoscaling.start_instance_refresh(
        AutoScalingGroupName=group, Preferences={"SkipMatching": False}
    )["InstanceRefreshId"]

    calls: list[tuple[str, dict[str, Any]]] = []
    states_at_scale_in: dict[str, str] = {}

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, params))
        if model.name == "UpdateAutoScalingGroup":
            states_at_scale_in.update(ec2_states(deployer, warmed))

    deployer.session.events.register("before-parameter-build.auto-scaling", record)
    try:
        result = deployer.destroy("--prefix", prefix, "--yes", *(["--pause"] if pausing else []))
    finally:
        deployer.session.events.unregister("before-parameter-build.auto-scaling", record)
    assert result.code == 0, result.text
    assert f"{group}: instance refresh {refresh} cancelled" in result.out
    assert f"{group}: warm pool deleted (ForceDelete), 2 instance(s) to terminate" in result.out
    assert f"{group}: warm pool gone, its 2 instance(s) terminated" in result.out
    names = [name for name, _ in calls]
    assert names.index("CancelInstanceRefresh") < names.index("DeleteWarmPool")
    assert names.index("DeleteWarmPool") < names.index("UpdateAutoScalingGroup")
    deleted = next(params for name, params in calls if name == "DeleteWarmPool")
    assert deleted == {"AutoScalingGroupName": group, "ForceDelete": True}
    # The pool's instances were gone (and with them their volumes) before the group went to 0.
    assert states_at_scale_in == dict.fromkeys(warmed, "terminated")
    assert f"{prefix}-ecs" not in deployer.stacks(prefix)
    left = deployer.client("ec2").describe_instances(
        Filters=[
            {
                "Name": "instance-state-name",
                "Values": ["pending", "running", "stopping", "stopped"],
            },
            {"Name": "tag:aws:autoscaling:groupName", "Values": [group]},
        ]
    )["Reservations"]
    assert left == [], json.dumps(left, default=str)
