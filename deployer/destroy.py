"""Removing a deployment: the stacks in reverse order, and what CloudFormation does not own.

The study stacks (`<prefix>-study-<name>`, found by their tags) go after the MWAA stack and
before the ECS stack whose log group and execution role they name; --pause keeps them (they
bill nothing) and the resume points them at the new ECS stack.

Before the ECS stack an instance refresh still running is cancelled, the warm pool is deleted
and its instances awaited until terminated (`warm_pool.delete_pool`: stopped instances bill
their volumes, and scaling the group down first would make the pool launch a refill), then the
group is scaled to 0 and the cluster drained: DeleteCluster refuses a cluster with container
instances still ACTIVE or DRAINING, and a terminated instance leaves the cluster only some time
after it is gone. Before the ami stack its baked AMIs go (`ami.remove_baked_amis`). The storage
stack's buckets are emptied first, every object version and delete marker included (the MWAA
bucket is versioned). The log groups that ECS (Container Insights), MWAA and Image Builder
create themselves are deleted by their exact names: a name prefix would also match another
deployment whose prefix starts the same way.
"""

from __future__ import annotations

import re
import time

from botocore.exceptions import ClientError

from deployer import ami, pause, studies, warm_pool
from deployer.ami import BAKE_TAG_PATTERN
from deployer.aws import error_code
from deployer.console import DeployError
from deployer.plan import STACK_LAYERS
from deployer.settings import Context
from deployer.stacks import Stacks

BUCKET_OUTPUTS = ("ResultsBucketName", "MwaaBucketName", "AccessLogsBucketName")
# Log records can still arrive while the buckets are deleted; the storage stack is retried.
STORAGE_DELETE_ATTEMPTS = 3
# MWAA's log types; their groups are airflow-<environment>-<type> (MWAA API reference,
# ModuleLoggingConfiguration: "airflow-MyMWAAEnvironment-MwaaEnvironment-DAGProcessing").
MWAA_LOG_TYPES = ("DAGProcessing", "Scheduler", "Task", "WebServer", "Worker")


def storage_buckets(ctx: Context, stacks: Stacks) -> list[str]:
    """The storage stack's buckets that still exist."""
    s3 = ctx.aws.client("s3")
    found = []
    for output in BUCKET_OUTPUTS:
        bucket = stacks.optional_output(ctx.stack_name("storage"), output)
        if not bucket:
            continue
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            continue
        found.append(bucket)
    return found


def empty_bucket(ctx: Context, bucket: str) -> int:
    """Deletes every object version and delete marker; returns how many."""
    s3 = ctx.aws.client("s3")
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        # DeleteObjects takes at most 1,000 keys.
        for start in range(0, len(keys), 1000):
            s3.delete_objects(
                Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
            )
        deleted += len(keys)
    ctx.console.info(f"emptied s3://{bucket} ({deleted} object version(s) and delete marker(s))")
    return deleted


def drain_cluster(ctx: Context, stacks: Stacks) -> None:
    """The warm pool deleted and its instances gone (they are not in the group's Instances),
    the group to 0 and its instances gone; then deregister what ECS still lists."""
    stack = ctx.stack_name("ecs")
    group = stacks.optional_output(stack, "AutoScalingGroupName")
    cluster = stacks.optional_output(stack, "ClusterName")
    if not group or not cluster:
        return
    autoscaling = ctx.aws.client("autoscaling")
    ecs = ctx.aws.client("ecs")
    with ctx.console.step(f"Drain {cluster} (group {group} to 0)") as step:
        warm_pool.cancel_refresh(ctx, group)
        warm_pool.delete_pool(ctx, group)
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=group, MinSize=0, DesiredCapacity=0
        )
        started_s = ctx.console.clock()
        last_progress_s = started_s
        while True:
            groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
                "AutoScalingGroups"
            ]
            left = len(groups[0]["Instances"]) if groups else 0
            if left == 0:
                break
            if ctx.console.clock() - started_s >= ctx.timing.drain_timeout_s:
                raise DeployError(
                    f"{group} still has {left} instance(s) after {ctx.timing.drain_timeout_s:.0f} s"
                )
            if ctx.console.clock() - last_progress_s >= ctx.console.progress_every_s:
                ctx.console.progress(f"{group}: {left} instance(s) terminating", since_s=started_s)
                last_progress_s = ctx.console.clock()
            time.sleep(ctx.timing.destroy_poll_s)
        deregistered = 0
        for status in ("ACTIVE", "DRAINING"):
            for page in ecs.get_paginator("list_container_instances").paginate(
                cluster=cluster, status=status
            ):
                for instance in page["containerInstanceArns"]:
                    # Its EC2 instance is terminated; ECS has not noticed yet.
                    ecs.deregister_container_instance(
                        cluster=cluster, containerInstance=instance, force=True
                    )
                    ctx.console.info(
                        f"deregistered {instance.rsplit('/', 1)[-1]} (instance already terminated)"
                    )
                    deregistered += 1
        step.result = f"drained, {deregistered} container instance(s) deregistered"


def delete_log_groups(ctx: Context, names: list[str]) -> None:
    """Deletes these log groups, by exact name; a group that does not exist is skipped."""
    logs = ctx.aws.client("logs")
    for name in names:
        try:
            logs.delete_log_group(logGroupName=name)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                continue
            raise
        ctx.console.info(f"deleted log group {name}")


def mwaa_log_groups(ctx: Context, stacks: Stacks) -> list[str]:
    """The environment's log groups: their names, and what GetEnvironment says while the
    environment exists."""
    deployed = stacks.optional_output(ctx.stack_name("mwaa"), "EnvironmentName")
    # mwaa.yaml names the environment after its stack.
    environment = deployed or ctx.stack_name("mwaa")
    names = {f"airflow-{environment}-{log_type}" for log_type in MWAA_LOG_TYPES}
    if deployed is None:
        return sorted(names)
    try:
        described = ctx.aws.client("mwaa").get_environment(Name=environment)["Environment"]
    except ClientError:
        return sorted(names)
    for setting in (described.get("LoggingConfiguration") or {}).values():
        arn = str(setting.get("CloudWatchLogGroupArn") or "")
        if ":log-group:" in arn:
            names.add(arn.split(":log-group:", 1)[1].removesuffix(":*"))
    return sorted(names)


def image_builder_log_groups(ctx: Context) -> list[str]:
    """Image Builder's groups of this deployment's recipes (<prefix>-ami-<bake tag>)."""
    logs = ctx.aws.client("logs")
    start = f"/aws/imagebuilder/{ctx.stack_name('ami')}-"
    exact = re.compile(re.escape(start) + BAKE_TAG_PATTERN + "$")
    return [
        group["logGroupName"]
        for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=start)
        for group in page["logGroups"]
        if exact.match(group["logGroupName"])
    ]


def confirm(ctx: Context, *, stacks: list[str], buckets: list[str]) -> None:
    console = ctx.console
    lines = [f"This deletes, in region {ctx.aws.region}:"]
    lines += [f"  stack  {stack}" for stack in stacks]
    lines += [f"  bucket {b} (every object and version: all study results)" for b in buckets]
    if ctx.stack_name("mwaa") in stacks:
        lines.append(pause.HISTORY_WARNING)
    print("\n".join(lines), file=console.out, flush=True)
    if not console.confirm(""):
        raise DeployError("not confirmed; nothing deleted")


def destroy(ctx: Context, *, pausing: bool) -> None:
    stacks = Stacks(ctx)
    console = ctx.console
    console.log(
        f"Signed in as {ctx.caller.arn}; looking for stacks {ctx.prefix}-* in {ctx.aws.region}"
    )
    layers = pause.LAYERS_PAUSED if pausing else tuple(reversed(STACK_LAYERS))
    present = [ctx.stack_name(layer) for layer in layers if stacks.describe(ctx.stack_name(layer))]
    if not pausing:
        study_stacks = sorted(studies.deployed(stacks.listed(), ctx.prefix).values())
        mwaa = ctx.stack_name("mwaa")
        at = present.index(mwaa) + 1 if mwaa in present else 0
        present[at:at] = study_stacks
    if not present:
        print(
            f"No stacks named {ctx.prefix}-* in {ctx.aws.region}; nothing to delete.",
            file=console.out,
        )
        return
    buckets = [] if pausing else storage_buckets(ctx, stacks)
    confirm(ctx, stacks=present, buckets=buckets)
    airflow_groups = mwaa_log_groups(ctx, stacks)
    for stack in present:
        layer = stack.removeprefix(f"{ctx.prefix}-")
        if layer == "ecs":
            cluster = stacks.optional_output(stack, "ClusterName") or f"{stack}-cluster"
            drain_cluster(ctx, stacks)
            _delete(ctx, stacks, stack)
            # Container Insights creates this group itself; the stack does not own it.
            delete_log_groups(ctx, [f"/aws/ecs/containerinsights/{cluster}/performance"])
        elif layer == "ami":
            with console.step(f"Remove the AMIs baked by {stack}") as step:
                removed = ami.remove_baked_amis(ctx, stack=stack, keep=None)
                step.result = f"{len(removed)} removed"
            _delete(ctx, stacks, stack)
        elif layer == "storage":
            _delete_storage(ctx, stacks, stack)
        else:
            _delete(ctx, stacks, stack)
    # MWAA creates its log groups itself; the stack does not own them.
    delete_log_groups(ctx, airflow_groups)
    if pausing:
        console.log(pause.paused_note(ctx.prefix))
        return
    delete_log_groups(ctx, image_builder_log_groups(ctx))
    console.log(f"Done: everything deploy.sh created with prefix {ctx.prefix} is gone")


def _delete(ctx: Context, stacks: Stacks, stack: str) -> None:
    with ctx.console.step(f"Delete {stack}") as step:
        stacks.delete(stack)
        step.result = "deleted"


def _delete_storage(ctx: Context, stacks: Stacks, stack: str) -> None:
    for attempt in range(1, STORAGE_DELETE_ATTEMPTS + 1):
        for bucket in storage_buckets(ctx, stacks):
            empty_bucket(ctx, bucket)
        try:
            _delete(ctx, stacks, stack)
            return
        except DeployError as error:
            if attempt == STORAGE_DELETE_ATTEMPTS:
                raise
            ctx.console.error(f"{error} (attempt {attempt}); emptying the buckets again")
