"""The ECS group's warm pool (--warm-pool N, ecs.yaml WarmPoolSize): what the preflight says
about it, the instance refresh after a launch template change, and its removal before the group
goes.

- Refused before any change: a pool larger than --max-instances, and a pool with Spot. Warm
  pools take no Spot Instances ("Your mixed instances policy must be configured for On-Demand
  instances only when using warm pools": Auto Scaling user guide, "Decrease latency for
  applications with long boot times using warm pools", Limitations); ecs.yaml's Rule
  WarmPoolIsOnDemand refuses it too, but only once the stack update has begun.
- What it bills comes from the engine's cost model (dags/windows_batch/cost.py, as the DAGs
  price it): its stopped instances bill their gp3 root volumes, and each instance a study takes
  from it is replaced by a launch that boots cold once.
- A new launch template version (a new baked AMI, new user data) leaves the pool's instances as
  they are: "existing instances are not affected" (user guide, "Update the instances in a warm
  pool"). An instance refresh replaces them: "An instance refresh first replaces InService
  instances. Then it replaces instances in the warm pool" (same section). RefreshPreferences has
  no setting for the pool (botocore's service model); the pool's progress is WarmPoolProgress.
  SkipMatching replaces only "the instances that don't match your last saved configuration"
  (user guide, "Use an instance refresh with skip matching"): CloudFormation has saved the new
  version on the group already. MinHealthyPercentage 100 without MaxHealthyPercentage
  terminates, then launches, one instance at a time ("Setting the minimum healthy percentage to
  100 percent limits the rate of replacement to one instance at a time": API reference,
  RefreshPreferences): a study that scales out meanwhile keeps all but one instance, and the
  group and its pool never hold more than the group's maximum, the vCPU quota the preflight
  checked. It starts only while the group is at 0 (a refresh would terminate a running study's
  instances); the next deploy starts it otherwise, since it looks at the instances, not at what
  this run changed. It is not awaited, as EnableFastLaunch's snapshots are not
  (ami.refresh_fast_launch): the deploy needs nothing from it, a scale-out meanwhile takes what
  the pool has, and it takes a cold Windows boot per instance.
- Before the group is scaled to 0 (destroy, pause) the pool is deleted, not emptied: scaling
  the group down first would make the pool launch a refill (it holds MaxGroupPreparedCapacity
  minus the desired capacity) that the stack's deletion then terminates. DeleteWarmPool with
  ForceDelete terminates its instances and drops their lifecycle actions ("If there are
  instances in the warm pool ... use ... --force-delete. This option also terminates the Amazon
  EC2 instances and any outstanding lifecycle actions": user guide, "AWS CLI examples for
  working with warm pools"); it returns "without waiting for all instances to be terminated"
  (API reference, DeleteWarmPool), so the instances are awaited: a stopped instance bills its
  volume until it is terminated. A refresh still running is cancelled first: it would launch
  replacements into the group or the pool while they are being emptied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from deployer.capacity import Capacity
from deployer.console import DeployError
from deployer.engine import cost
from deployer.plan import DeployOptions
from deployer.settings import Context
from deployer.stacks import Stacks, read_template

# StartInstanceRefresh's preferences (module docstring).
REFRESH_PREFERENCES: dict[str, Any] = {"SkipMatching": True, "MinHealthyPercentage": 100}
# InstanceRefresh Status values of a refresh that may still replace instances.
ACTIVE_REFRESH = ("Pending", "InProgress", "Cancelling", "Baking", "RollbackInProgress")
# The ones CancelInstanceRefresh stops.
CANCELLABLE_REFRESH = ("Pending", "InProgress", "Baking")


def refusal(*, capacity: Capacity, options: DeployOptions, stack: str) -> str | None:
    """Why this pool cannot be deployed, naming the option; None when it can."""
    size = capacity.warm_pool
    if size == 0:
        return None
    pool = (
        f"--warm-pool {size}"
        if options.warm_pool is not None
        else f"the warm pool of {size} (kept from stack {stack}; --warm-pool 0 removes it)"
    )
    if capacity.purchase_option == "spot":
        spot = "--spot" if options.purchase_option is not None else f"Spot (kept from {stack})"
        return (
            f"{pool} with {spot}: EC2 Auto Scaling warm pools take no Spot Instances (Auto "
            "Scaling user guide, warm pool limitations); use --on-demand or --warm-pool 0"
        )
    if size > capacity.max_instances:
        return (
            f"{pool} > --max-instances {capacity.max_instances}: the group never takes more "
            "than its maximum from the pool; lower --warm-pool or raise --max-instances"
        )
    return None


def _parameter(stacks: Stacks, stack: str, name: str) -> str | None:
    for parameter in (stacks.describe(stack) or {}).get("Parameters", []):
        if parameter["ParameterKey"] == name and parameter.get("ParameterValue"):
            return str(parameter["ParameterValue"])
    return None


def deployed_size(stacks: Stacks, stack: str) -> int:
    """The ECS stack's WarmPoolSize now (0 without a stack or a pool)."""
    return int(_parameter(stacks, stack, "WarmPoolSize") or 0)


def root_volume_gib(ctx: Context, stacks: Stacks) -> float:
    """What each instance's root volume is: the ECS stack's RootVolumeSizeInGiB, else the
    template's default."""
    deployed = _parameter(stacks, ctx.stack_name("ecs"), "RootVolumeSizeInGiB")
    if deployed is not None:
        return float(deployed)
    declared = read_template(ctx.project.template("ecs"))["Parameters"]["RootVolumeSizeInGiB"]
    return float(declared["Default"])


def describe_cost(*, capacity: Capacity, root_volume_gib: float, boot_s: float) -> str:
    """The pool's size, its volumes, what it bills idle and a full refill, from the engine's
    cost model."""
    size = capacity.warm_pool
    instance_type = capacity.instance_types[0]
    settings = cost.CostSettings(
        instance_types=(instance_type,),
        warm_pool_size=size,
        root_volume_gib=root_volume_gib,
        boot_s=boot_s,
    )
    use = cost.pool_use(settings, cost.prices_from(settings), from_pool=size, cold=0)
    monthly = use.ebs_usd_per_h * cost.HOURS_PER_MONTH
    refill = (
        f"no price for {instance_type} in the engine's table"
        if use.refill_usd is None
        else f"about ${use.refill_usd:.2f} ({cost.PRICES_AS_OF})"
    )
    return (
        f"{size} stopped instance(s) ({instance_type}, On-Demand) with {size} x "
        f"{root_volume_gib:g} GiB gp3 EBS ({size * root_volume_gib:g} GiB): about "
        f"${use.ebs_usd_per_h:.3f}/h idle (${monthly:.2f} a month at "
        f"{settings.ebs_usd_per_gb_month:g} USD/GB-month); a study that starts all {size} from "
        f"it adds a refill of {size} x {boot_s / 60:.1f} min cold boot, {refill}"
    )


@dataclass(frozen=True)
class Pool:
    """DescribeWarmPool's answer: the pool's settings (None: no pool) and its instances."""

    configuration: dict[str, Any] | None
    instances: list[dict[str, Any]] = field(default_factory=list)


def describe_pool(autoscaling: Any, group: str) -> Pool:
    answer = (
        autoscaling.get_paginator("describe_warm_pool")
        .paginate(AutoScalingGroupName=group)
        .build_full_result()
    )
    return Pool(
        configuration=answer.get("WarmPoolConfiguration") or None,
        instances=list(answer.get("Instances", [])),
    )


def _template_version(ctx: Context, group: dict[str, Any]) -> tuple[str, str] | None:
    """The launch template ID and version number the group launches from."""
    policy = group.get("MixedInstancesPolicy") or {}
    spec = (policy.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification") or group.get(
        "LaunchTemplate"
    )
    if not spec or not spec.get("LaunchTemplateId"):
        return None
    template_id = str(spec["LaunchTemplateId"])
    version = str(spec.get("Version") or "$Default")
    if version in ("$Latest", "$Default"):
        described = ctx.aws.client("ec2").describe_launch_templates(
            LaunchTemplateIds=[template_id]
        )["LaunchTemplates"][0]
        key = "LatestVersionNumber" if version == "$Latest" else "DefaultVersionNumber"
        version = str(described[key])
    return template_id, version


def _launched_from(instance: dict[str, Any]) -> tuple[str, str] | None:
    spec = instance.get("LaunchTemplate") or {}
    if not spec.get("LaunchTemplateId"):
        return None
    return str(spec["LaunchTemplateId"]), str(spec.get("Version"))


def active_refresh(autoscaling: Any, group: str) -> dict[str, Any] | None:
    """The group's instance refresh that may still replace instances, if any."""
    refreshes = autoscaling.describe_instance_refreshes(AutoScalingGroupName=group)
    return next((r for r in refreshes["InstanceRefreshes"] if r["Status"] in ACTIVE_REFRESH), None)


def refresh_stale_pool(ctx: Context, stacks: Stacks) -> None:
    """After the ECS stack: an instance refresh when the warm pool holds instances of another
    launch template version than the group launches (module docstring)."""
    group_name = stacks.optional_output(ctx.stack_name("ecs"), "AutoScalingGroupName")
    if not group_name:
        return
    autoscaling = ctx.aws.client("autoscaling")
    pool = describe_pool(autoscaling, group_name)
    if not pool.instances:
        return
    console = ctx.console
    active = active_refresh(autoscaling, group_name)
    if active is not None:
        left = (active.get("ProgressDetails") or {}).get("WarmPoolProgress") or {}
        with console.step(f"Instance refresh of {group_name}") as step:
            console.info(
                f"{left.get('InstancesToUpdate', '?')} warm pool instance(s) still to replace"
            )
            step.result = (
                f"{active['InstanceRefreshId']} is {active['Status']} already; not started again"
            )
        return
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])[
        "AutoScalingGroups"
    ]
    current = _template_version(ctx, group)
    stale = [i for i in pool.instances if _launched_from(i) not in (None, current)]
    if current is None or not stale:
        return
    with console.step(f"Instance refresh of {group_name}") as step:
        old = sorted({str((_launched_from(i) or ("", ""))[1]) for i in stale})
        console.info(
            f"{len(stale)} of the warm pool's {len(pool.instances)} instance(s) were launched "
            f"from launch template {current[0]} version {', '.join(old)}; the group now "
            f"launches version {current[1]}"
        )
        in_use = int(group.get("DesiredCapacity") or 0)
        if in_use:
            console.warn(
                f"{group_name} has {in_use} instance(s) in use (a study runs): a refresh would "
                "terminate them; run ./deploy.sh again once it is over, which starts it"
            )
            step.result = "not started while a study runs"
            return
        refresh_id = autoscaling.start_instance_refresh(
            AutoScalingGroupName=group_name, Preferences=REFRESH_PREFERENCES
        )["InstanceRefreshId"]
        console.info(
            f"refresh {refresh_id}: SkipMatching, MinHealthyPercentage 100 (one instance at a "
            "time); it replaces the pool's instances after the group's, each new one boots cold "
            "once. Until it ends, a scale-out may still start an old instance. Follow it: aws "
            f"autoscaling describe-instance-refreshes --region {ctx.aws.region} "
            f"--auto-scaling-group-name {group_name}"
        )
        step.result = f"{refresh_id} started, not awaited"


def _poll(ctx: Context, *, left: Callable[[], str | None], what: str, timeout_s: float) -> None:
    """Calls `left()` every destroy poll until it says nothing is left (None); a progress line
    with what it said every `progress_every_s`; DeployError after `timeout_s`."""
    console = ctx.console
    started_s = console.clock()
    last_progress_s = started_s
    while (remaining := left()) is not None:
        if console.clock() - started_s >= timeout_s:
            raise DeployError(f"{what}: {remaining} after {timeout_s:.0f} s; run again later")
        if console.clock() - last_progress_s >= console.progress_every_s:
            console.progress(f"{what}: {remaining}", since_s=started_s)
            last_progress_s = console.clock()
        time.sleep(ctx.timing.destroy_poll_s)


def cancel_refresh(ctx: Context, group: str) -> None:
    """Cancels the group's active instance refresh and waits until it replaces nothing more."""
    autoscaling = ctx.aws.client("autoscaling")
    active = active_refresh(autoscaling, group)
    if active is None:
        return
    refresh_id = active["InstanceRefreshId"]
    if active["Status"] in CANCELLABLE_REFRESH:
        autoscaling.cancel_instance_refresh(AutoScalingGroupName=group)
    ctx.console.info(f"{group}: instance refresh {refresh_id} cancelled")

    def status() -> str | None:
        described = autoscaling.describe_instance_refreshes(
            AutoScalingGroupName=group, InstanceRefreshIds=[refresh_id]
        )["InstanceRefreshes"]
        current = described[0]["Status"] if described else "gone"
        return current if current in ACTIVE_REFRESH else None

    _poll(
        ctx,
        left=status,
        what=f"instance refresh {refresh_id}",
        timeout_s=ctx.timing.drain_timeout_s,
    )


def _not_terminated(ec2: Any, ids: set[str]) -> list[str]:
    if not ids:
        return []
    return [
        instance["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-id", "Values": sorted(ids)}]
        )
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] != "terminated"
    ]


def delete_pool(ctx: Context, group: str) -> None:
    """Deletes the group's warm pool (ForceDelete) and waits until its instances are
    terminated (module docstring)."""
    autoscaling = ctx.aws.client("autoscaling")
    ec2 = ctx.aws.client("ec2")
    try:
        pool = describe_pool(autoscaling, group)
    except ClientError:
        return
    if pool.configuration is None and not pool.instances:
        return
    ids = [instance["InstanceId"] for instance in pool.instances]
    if pool.configuration is not None and pool.configuration.get("Status") != "PendingDelete":
        autoscaling.delete_warm_pool(AutoScalingGroupName=group, ForceDelete=True)
    ctx.console.info(
        f"{group}: warm pool deleted (ForceDelete), {len(ids)} instance(s) to terminate"
    )

    def running() -> str | None:
        listed = describe_pool(autoscaling, group)
        alive = _not_terminated(ec2, {i["InstanceId"] for i in listed.instances} | set(ids))
        if listed.configuration is None and not listed.instances and not alive:
            return None
        state = "gone" if listed.configuration is None else "still listed"
        return f"{len(alive)} instance(s) not terminated yet, the pool {state}"

    _poll(ctx, left=running, what=f"warm pool of {group}", timeout_s=ctx.timing.drain_timeout_s)
    ctx.console.info(f"{group}: warm pool gone, its {len(ids)} instance(s) terminated")
