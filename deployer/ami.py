"""The baked AMI (--bake-ami): the ami stack, EC2 Fast Launch, and removing AMIs that no
launch template uses any more.

Deleting the stack's AWS::ImageBuilder::Image does not remove its AMI: Image Builder's
DeleteImage "does not delete any EC2 AMIs" (Image Builder API reference). So AMIs are found by
the tag the ami stack's distribution puts on them and removed here: EC2 Fast Launch first
(DisableFastLaunch deletes its pre-provisioned snapshots), awaited, then the AMI is deregistered
and its own snapshots deleted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer.console import DeployError
from deployer.settings import Context
from deployer.stacks import Stacks

# Tag the ami stack's distribution puts on every AMI it bakes (cloudformation/ami.yaml).
BAKED_AMI_TAG = "windows-batch-compute:ami-stack"
# What bake_tag makes (and src-<hash>, the image tags of the earlier single-image bakes):
# destroy finds Image Builder's log groups of a recipe by it.
BAKE_TAG_PATTERN = "(?:bake|src)-[0-9a-f]{16}"
# EnableFastLaunch's MaxParallelLaunches: "6 or greater" (EC2 API reference); at most the
# account's default quota of 40 per Region across all AMIs (ami.yaml's MaxValue).
FAST_LAUNCH_MIN_PARALLEL_LAUNCHES = 6
FAST_LAUNCH_MAX_PARALLEL_LAUNCHES = 40


@dataclass(frozen=True)
class FastLaunchSize:
    """EC2 Fast Launch sized to the group: each launch uses one pre-provisioned snapshot, so
    one per instance the group may launch at once, and as many launches in parallel to make
    them again (within EC2's minimum and the default quota)."""

    snapshots: int
    parallel_launches: int

    @classmethod
    def for_group(cls, max_instances: int) -> FastLaunchSize:
        return cls(
            snapshots=max_instances,
            parallel_launches=min(
                FAST_LAUNCH_MAX_PARALLEL_LAUNCHES,
                max(FAST_LAUNCH_MIN_PARALLEL_LAUNCHES, max_instances),
            ),
        )


def deploy_ami_stack(
    ctx: Context,
    stacks: Stacks,
    *,
    image_uris: Sequence[str],
    subnet: str,
    security_group: str,
    fast_launch: FastLaunchSize,
) -> str:
    """Bakes these images unless the stack has them already; returns the AMI ID."""
    stack = ctx.stack_name("ami")
    stacks.deploy(
        "ami",
        {
            "ImageUris": baked_uris(image_uris),
            "BakeTag": bake_tag(image_uris),
            "SubnetId": subnet,
            "SecurityGroupId": security_group,
            "FastLaunchSnapshotCount": str(fast_launch.snapshots),
            "FastLaunchMaxParallelLaunches": str(fast_launch.parallel_launches),
        },
        # Image Builder's Windows build plus Fast Launch's first snapshots: about an hour.
        timeout_s=ctx.timing.ami_bake_timeout_s,
    )
    return stacks.output(stack, "BakedAmiId")


def bake_tag(image_uris: Sequence[str]) -> str:
    """The ami stack's name for a set of images: the same images, the same tag, no new bake."""
    digest = hashlib.sha256("\n".join(sorted(set(image_uris))).encode()).hexdigest()
    return f"bake-{digest[:16]}"


def baked_uris(image_uris: Sequence[str]) -> str:
    """ImageUris as the ami stack gets it and outputs it (BakedImageUris)."""
    return ",".join(sorted(set(image_uris)))


def fast_launch(ec2: Any, ami: str) -> dict[str, Any] | None:
    """EC2 Fast Launch's settings and state for the AMI, or None when it is off."""
    images = ec2.describe_fast_launch_images(ImageIds=[ami])["FastLaunchImages"]
    return images[0] if images else None


def refresh_fast_launch(ctx: Context, stacks: Stacks, *, ami: str, size: FastLaunchSize) -> None:
    """Points Fast Launch at its launch template's latest version, with `size`'s snapshots and
    parallel launches.

    A resume after --pause recreates the network stack, so the ami stack's Fast Launch template
    gets a new version (new subnet); the AMI's Fast Launch settings still name the old one, with
    which EC2 could not launch the instances that replenish its snapshots. The ami stack's own
    FastLaunchSnapshotCount and FastLaunchMaxParallelLaunches reach only the AMIs it bakes from
    then on (its distribution configuration), not one baked already: a new --max-instances
    reaches that AMI here.
    """
    ec2 = ctx.aws.client("ec2")
    template = stacks.output(ctx.stack_name("ami"), "FastLaunchTemplateId")
    version = str(
        ec2.describe_launch_templates(LaunchTemplateIds=[template])["LaunchTemplates"][0][
            "LatestVersionNumber"
        ]
    )
    current = fast_launch(ec2, ami)
    if current is None:
        ctx.console.warn(
            f"EC2 Fast Launch is not enabled for {ami}; instances launch from it the standard way"
        )
        return
    launch_template = current.get("LaunchTemplate", {})
    now = (
        launch_template.get("LaunchTemplateId"),
        str(launch_template.get("Version")),
        current["SnapshotConfiguration"]["TargetResourceCount"],
        current["MaxParallelLaunches"],
    )
    if now == (template, version, size.snapshots, size.parallel_launches):
        return
    ec2.enable_fast_launch(
        ImageId=ami,
        ResourceType="snapshot",
        LaunchTemplate={"LaunchTemplateId": template, "Version": version},
        MaxParallelLaunches=size.parallel_launches,
        SnapshotConfiguration={"TargetResourceCount": size.snapshots},
    )
    ctx.console.info(
        f"EC2 Fast Launch for {ami} now launches with {template} version {version}, keeps "
        f"{size.snapshots} pre-provisioned snapshot(s) (was {now[2]}) and makes them "
        f"{size.parallel_launches} at a time (was {now[3]})"
    )


def remove_baked_amis(ctx: Context, *, stack: str, keep: str | None) -> list[str]:
    """Removes every AMI the ami stack baked except `keep`; returns the AMIs removed."""
    ec2 = ctx.aws.client("ec2")
    images = [
        image
        for page in ec2.get_paginator("describe_images").paginate(
            Owners=["self"], Filters=[{"Name": f"tag:{BAKED_AMI_TAG}", "Values": [stack]}]
        )
        for image in page["Images"]
        if image["ImageId"] != keep
    ]
    for image in images:
        ami = image["ImageId"]
        _disable_fast_launch(ctx, ec2, ami)
        snapshots = [
            mapping["Ebs"]["SnapshotId"]
            for mapping in image.get("BlockDeviceMappings", [])
            if mapping.get("Ebs", {}).get("SnapshotId")
        ]
        ec2.deregister_image(ImageId=ami)
        for snapshot in snapshots:
            ec2.delete_snapshot(SnapshotId=snapshot)
        ctx.console.info(f"removed baked AMI {ami} and its snapshot(s) {' '.join(snapshots)}")
    return [image["ImageId"] for image in images]


def _disable_fast_launch(ctx: Context, ec2: Any, ami: str) -> None:
    """Fast Launch off (its pre-provisioned snapshots go) and awaited until it is gone."""
    current = fast_launch(ec2, ami)
    if current is None:
        return
    if current["State"] != "disabling":
        # A *-failed state can only be left with Force.
        ec2.disable_fast_launch(ImageId=ami, Force=current["State"].endswith("-failed"))
        ctx.console.info(
            f"disabling EC2 Fast Launch for {ami} (deletes its pre-provisioned snapshots)"
        )
    started_s = ctx.console.clock()
    last_progress_s = started_s
    while (current := fast_launch(ec2, ami)) is not None:
        if ctx.console.clock() - started_s >= ctx.timing.fast_launch_disable_timeout_s:
            raise DeployError(
                f"EC2 Fast Launch for {ami} is still {current['State']} after "
                f"{ctx.timing.fast_launch_disable_timeout_s:.0f} s; run again later"
            )
        if ctx.console.clock() - last_progress_s >= ctx.console.progress_every_s:
            ctx.console.progress(f"{ami}: Fast Launch {current['State']}", since_s=started_s)
            last_progress_s = ctx.console.clock()
        time.sleep(ctx.timing.fast_launch_poll_s)


def remove_ami_stack(ctx: Context, stacks: Stacks) -> None:
    """--no-bake-ami, once the ECS stack runs the public AMI again."""
    stack = ctx.stack_name("ami")
    if stacks.describe(stack) is None:
        return
    with ctx.console.step(f"Remove {stack} (--no-bake-ami)") as step:
        remove_baked_amis(ctx, stack=stack, keep=None)
        stacks.delete(stack)
        step.result = "deleted"
