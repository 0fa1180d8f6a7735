"""--bake-ami against the moto server's Image Builder and EC2 Fast Launch (its docstring):
bake every study's image and the base, keep on a re-run, follow Fast Launch's template,
--no-bake-ami, pause, destroy; a given --image-uri is baked too."""

from __future__ import annotations

from typing import Any

import moto_server  # tests/cloudformation/moto_server.py, loaded by tests/conftest.py

from deployer import ami
from deployer.stacks import read_template

from .conftest import REPO

LAYERS = ("storage", "network", "image", "ecs")


def billed_snapshots(ec2: Any, ami_id: str) -> list[str]:
    """The AMI's own snapshot, then Fast Launch's pre-provisioned ones."""
    image = ec2.describe_images(ImageIds=[ami_id])["Images"][0]
    return [image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]] + [
        snapshot["SnapshotId"]
        for snapshot in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        if snapshot.get("Description") == f"EC2 Fast Launch for {ami_id}"
    ]


def assert_nothing_left(ec2: Any, ami_id: str, billed: list[str]) -> None:
    """No AMI, Fast Launch entry or snapshot of `ami_id` bills any more."""
    assert ec2.describe_images(Owners=["self"], ImageIds=[ami_id])["Images"] == []
    assert ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"] == []
    left = {snapshot["SnapshotId"] for snapshot in ec2.describe_snapshots()["Snapshots"]}
    assert not left & set(billed)


def no_bake_then_bake_again(
    deployer: Any, prefix: str, *, old_ami: str, old_billed: list[str]
) -> tuple[str, list[str]]:
    """--no-bake-ami, then --bake-ami again; the new AMI and what it bills."""
    args = ("--prefix", prefix, "--skip", "mwaa")
    ec2 = deployer.client("ec2")
    ami_id, billed = old_ami, old_billed

    def outputs(layer: str) -> dict[str, str]:
        return deployer.outputs(f"{prefix}-{layer}")

    # --no-bake-ami: the hosts launch from the public AMI again, and the baked one stops billing.
    check = deployer.deploy(*args, "--no-bake-ami", "--check")
    assert f"--no-bake-ami: back to the public AMI; {prefix}-ami" in check.line("baked AMI")
    public = deployer.deploy(*args, "--no-bake-ami")
    assert public.code == 0, public.text
    assert f"==> Remove {prefix}-ami (--no-bake-ami): deleted" in public.out
    public_ami = deployer.client("ssm").get_parameter(Name=moto_server.WINDOWS_AMI_PARAMETER)
    assert outputs("ecs")["InstanceAmiId"] == public_ami["Parameter"]["Value"] != ami_id
    assert f"{prefix}-ami" not in deployer.stacks(prefix)
    assert_nothing_left(ec2, ami_id, billed)

    # Baked again (same tag, new AMI), for the pause and destroy that follow.
    rebaked = deployer.deploy(*args, "--bake-ami")
    assert rebaked.code == 0, rebaked.text
    ami_id = outputs("ami")["BakedAmiId"]
    assert outputs("ecs")["InstanceAmiId"] == ami_id
    billed = billed_snapshots(ec2, ami_id)

    return ami_id, billed


def test_bake_ami_launches_from_it_keeps_it_on_pause_and_destroy_leaves_nothing_billing(
    two_studies: Any,
) -> None:
    deployer = two_studies
    prefix = deployer.prefix()
    args = ("--prefix", prefix, "--skip", "mwaa")
    ec2 = deployer.client("ec2")

    def outputs(layer: str) -> dict[str, str]:
        return deployer.outputs(f"{prefix}-{layer}")

    baked = deployer.deploy(*args, "--build-image", "--bake-ami")
    assert baked.code == 0, baked.text
    assert f"==> Stack {prefix}-ami: created" in baked.out
    ami_id = outputs("ami")["BakedAmiId"]
    ecs = outputs("ecs")
    # The AMI holds exactly the images the study task definitions run (tiny's is the base
    # image), and the hosts launch from it.
    run = {outputs(f"study-{name}")["ImageUri"] for name in ("tiny", "option-pricing")}
    assert len(run) == 2
    assert outputs("ami")["BakedImageUris"] == ",".join(sorted(run))
    assert ecs["InstanceAmiId"] == ami_id
    group = deployer.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    template = ec2.describe_launch_template_versions(
        LaunchTemplateId=group["MixedInstancesPolicy"]["LaunchTemplate"][
            "LaunchTemplateSpecification"
        ]["LaunchTemplateId"],
        Versions=["$Latest"],
    )["LaunchTemplateVersions"][0]
    assert template["LaunchTemplateData"]["ImageId"] == ami_id
    bake = ami.bake_tag(sorted(run))
    image = ec2.describe_images(ImageIds=[ami_id])["Images"][0]
    assert {t["Key"]: t["Value"] for t in image["Tags"]}["windows-batch-compute:bake-tag"] == bake
    (fast_launch,) = ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"]
    assert fast_launch["State"] == "enabled"
    assert fast_launch["MaxParallelLaunches"] >= 6
    billed = billed_snapshots(ec2, ami_id)
    assert len(billed) == 1 + fast_launch["SnapshotConfiguration"]["TargetResourceCount"]

    # A re-run without the option keeps the baked AMI and changes no stack. Fast Launch follows
    # its launch template's latest version (a resume after --pause makes one: new subnets).
    template_id = outputs("ami")["FastLaunchTemplateId"]
    assert fast_launch["LaunchTemplate"] == {"LaunchTemplateId": template_id, "Version": "1"}
    ec2.create_launch_template_version(
        LaunchTemplateId=template_id, SourceVersion="1", LaunchTemplateData={}
    )
    again = deployer.deploy(*args)
    assert again.code == 0, again.text
    # + the ami stack, the two study stacks, the uploads
    assert again.out.count(": no changes (") == len(LAYERS) + 4
    assert f"{ami_id} has the 2 image(s): {','.join(sorted(run))}" in again.line("baked AMI")
    assert f"EC2 Fast Launch for {ami_id} now launches with {template_id} version 2" in again.out
    assert outputs("ecs")["InstanceAmiId"] == ami_id
    (refreshed,) = ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"]
    assert refreshed["LaunchTemplate"]["Version"] == "2"
    assert refreshed["MaxParallelLaunches"] == fast_launch["MaxParallelLaunches"]

    ami_id, billed = no_bake_then_bake_again(deployer, prefix, old_ami=ami_id, old_billed=billed)

    paused = deployer.destroy("--prefix", prefix, "--pause", "--yes")
    assert paused.code == 0, paused.text
    kept = ("storage", "image", "ami", "study-option-pricing", "study-tiny")
    assert set(deployer.stacks(prefix)) == {f"{prefix}-{s}" for s in kept}
    assert ec2.describe_images(ImageIds=[ami_id])["Images"]
    assert ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"]

    destroyed = deployer.destroy("--prefix", prefix, "--yes")
    assert destroyed.code == 0, destroyed.text
    assert f"disabling EC2 Fast Launch for {ami_id}" in destroyed.out
    assert f"==> Remove the AMIs baked by {prefix}-ami: 1 removed" in destroyed.out
    assert deployer.stacks(prefix) == {}
    assert_nothing_left(ec2, ami_id, billed)


def test_a_given_image_uri_is_baked_with_the_built_ones(two_studies: Any) -> None:
    """--image-uri and --bake-ami no longer exclude each other: the given image is pulled into
    the AMI beside the images built here; a change of it bakes a new AMI."""
    deployer = two_studies
    prefix = deployer.prefix()
    given = "public.ecr.aws/example/option-pricing:3"
    args = ("--prefix", prefix, "--skip", "mwaa", "--image-uri", f"option_pricing={given}")
    baked = deployer.deploy(*args, "--build-image", "--bake-ami")
    assert baked.code == 0, baked.text
    tiny = deployer.outputs(f"{prefix}-study-tiny")["ImageUri"]
    assert tiny.rsplit(":", 1)[1].startswith("base-")
    first = deployer.outputs(f"{prefix}-ami")
    assert first["BakedImageUris"] == ",".join(sorted([given, tiny]))
    assert first["BakeTag"] == ami.bake_tag([given, tiny])

    other = "public.ecr.aws/example/option-pricing:4"
    changed = deployer.deploy(*args[:-1], f"option_pricing={other}")
    assert changed.code == 0, changed.text
    assert f"==> Stack {prefix}-ami: updated" in changed.out
    second = deployer.outputs(f"{prefix}-ami")
    assert second["BakedImageUris"] == ",".join(sorted([other, tiny]))
    assert second["BakedAmiId"] != first["BakedAmiId"]
    assert f"removed baked AMI {first['BakedAmiId']}" in changed.out
    assert deployer.destroy("--prefix", prefix, "--yes").code == 0


def test_fast_launch_keeps_a_snapshot_for_every_instance_of_the_group(one_study: Any) -> None:
    """Each launch from a Fast Launch AMI uses one pre-provisioned snapshot, and EnableFastLaunch
    takes at least 6 parallel launches (EC2 User Guide, "EC2 Fast Launch"; EC2 API reference,
    EnableFastLaunch): FastLaunchSnapshotCount = --max-instances, FastLaunchMaxParallelLaunches
    = max(6, --max-instances). A later --max-instances reaches the AMI baked already: the ami
    stack's distribution configuration applies only to the AMIs it bakes from then on."""
    deployer = one_study
    prefix = deployer.prefix()
    args = ("--prefix", prefix, "--skip", "mwaa", "--image-uri", "tiny=example.com/tiny:1")
    ec2 = deployer.client("ec2")
    baked = deployer.deploy(*args, "--bake-ami", "--max-instances", "4")
    assert baked.code == 0, baked.text
    stack = deployer.client("cloudformation").describe_stacks(StackName=f"{prefix}-ami")
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Stacks"][0]["Parameters"]}
    assert parameters["FastLaunchSnapshotCount"] == "4"
    assert parameters["FastLaunchMaxParallelLaunches"] == "6"
    ami_id = deployer.outputs(f"{prefix}-ami")["BakedAmiId"]
    (fast_launch,) = ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"]
    assert fast_launch["SnapshotConfiguration"]["TargetResourceCount"] == 4
    assert fast_launch["MaxParallelLaunches"] == 6

    larger = deployer.deploy(*args, "--max-instances", "12")
    assert larger.code == 0, larger.text
    assert deployer.outputs(f"{prefix}-ami")["BakedAmiId"] == ami_id  # no new bake
    assert f"EC2 Fast Launch for {ami_id} now launches with " in larger.out
    assert "keeps 12 pre-provisioned snapshot(s) (was 4) and makes them 12 at a time (was 6)" in (
        larger.out
    )
    (fast_launch,) = ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"]
    assert fast_launch["SnapshotConfiguration"]["TargetResourceCount"] == 12
    assert fast_launch["MaxParallelLaunches"] == 12
    again = deployer.deploy(*args, "--max-instances", "12")
    assert again.code == 0, again.text
    assert "EC2 Fast Launch for" not in again.out


def test_fast_launch_parallel_launches_stay_within_ec2s_minimum_and_the_default_quota() -> None:
    """ami.yaml's own bounds (6: EnableFastLaunch's minimum; 40: the default Region quota)."""
    declared = read_template(REPO / "cloudformation" / "ami.yaml")["Parameters"]
    bounds = declared["FastLaunchMaxParallelLaunches"]
    assert (bounds["MinValue"], bounds["MaxValue"]) == (
        ami.FAST_LAUNCH_MIN_PARALLEL_LAUNCHES,
        ami.FAST_LAUNCH_MAX_PARALLEL_LAUNCHES,
    )
    sizes = {n: ami.FastLaunchSize.for_group(n) for n in (1, 6, 10, 40, 50)}
    assert {n: (s.snapshots, s.parallel_launches) for n, s in sizes.items()} == {
        1: (1, 6),
        6: (6, 6),
        10: (10, 10),
        40: (40, 40),
        50: (50, 40),
    }
