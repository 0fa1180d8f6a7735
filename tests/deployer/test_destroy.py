"""destroy and pause against the moto server, in process: asks first, empties every object
version, drains the cluster, deletes in order (the study stacks between MWAA and ECS), removes
the log groups AWS services created themselves (by exact name), and pause keeps what resumes a
deployment (the study stacks too)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deployer import destroy as destroy_module
from deployer import pause
from deployer.stacks import Stacks


def deployed(deployer: Any, *extra: str) -> str:
    prefix = deployer.prefix()
    result = deployer.deploy("--prefix", prefix, "--skip", "mwaa", "--build-image", *extra)
    assert result.code == 0, result.text
    return prefix


def register_container_instance(deployer: Any, cluster: str, group: str) -> None:
    """A container instance still registered (its instance going away), as ECS leaves it for a
    while after the group terminates the instance."""
    deployer.client("autoscaling").set_desired_capacity(
        AutoScalingGroupName=group, DesiredCapacity=1
    )
    instance = next(
        i
        for i in deployer.running_instances()
        if {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("aws:autoscaling:groupName")
        == group
    )
    zone = instance["Placement"]["AvailabilityZone"]
    # The instance identity document the agent sends (what moto's register reads from it).
    document = {
        "instanceId": instance["InstanceId"],
        "instanceType": instance["InstanceType"],
        "imageId": instance["ImageId"],
        "availabilityZone": zone,
        "region": zone[:-1],
        "privateIp": instance.get("PrivateIpAddress"),
        "accountId": "123456789012",
        "architecture": "x86_64",
    }
    deployer.client("ecs").register_container_instance(
        cluster=cluster, instanceIdentityDocument=json.dumps(document)
    )


def test_destroy_asks_then_empties_versioned_buckets_drains_and_deletes_in_order(
    two_studies: Any,
) -> None:
    deployer = two_studies
    prefix = deployed(deployer)
    storage = deployer.outputs(f"{prefix}-storage")
    ecs = deployer.outputs(f"{prefix}-ecs")
    s3 = deployer.client("s3")
    mwaa_bucket, results_bucket = storage["MwaaBucketName"], storage["ResultsBucketName"]
    # Two versions and a delete marker in the versioned bucket, results in the other.
    s3.put_object(Bucket=mwaa_bucket, Key="dags/old.py", Body=b"v1")
    s3.put_object(Bucket=mwaa_bucket, Key="dags/old.py", Body=b"v2")
    s3.delete_object(Bucket=mwaa_bucket, Key="dags/old.py")
    for index in range(3):
        s3.put_object(
            Bucket=results_bucket, Key=f"sim/task_results/r/task-{index:05d}.json", Body=b"{}"
        )
    register_container_instance(deployer, ecs["ClusterName"], ecs["AutoScalingGroupName"])
    # Container Insights' own log group, and the log groups MWAA made for its environment.
    logs = deployer.client("logs")
    insights = f"/aws/ecs/containerinsights/{ecs['ClusterName']}/performance"
    logs.create_log_group(logGroupName=insights)
    for log_type in destroy_module.MWAA_LOG_TYPES:
        logs.create_log_group(logGroupName=f"airflow-{prefix}-mwaa-{log_type}")
    stacks = {
        f"{prefix}-{layer}"
        for layer in ("storage", "network", "image", "ecs", "study-option-pricing", "study-tiny")
    }
    assert stacks == set(deployer.stacks(prefix))

    refused = deployer.destroy("--prefix", prefix, stdin="no\n")
    assert refused.code == 1
    assert "not confirmed; nothing deleted" in refused.err
    assert f"bucket {mwaa_bucket}" in refused.out
    assert f"stack  {prefix}-study-tiny" in refused.out
    assert stacks == set(deployer.stacks(prefix))

    destroyed = deployer.destroy("--prefix", prefix, "--yes")
    assert destroyed.code == 0, destroyed.text
    order = [line for line in destroyed.out.splitlines() if line.startswith("==> Delete ")]
    assert [line.split(":")[0] for line in order] == [
        f"==> Delete {prefix}-{layer}"
        for layer in ("study-option-pricing", "study-tiny", "ecs", "image", "network", "storage")
    ]
    assert all(": deleted (" in line for line in order)
    assert deployer.stacks(prefix) == {}
    for bucket in (mwaa_bucket, results_bucket, storage["AccessLogsBucketName"]):
        with pytest.raises(ClientError, match=r"NoSuchBucket|Not Found|404"):
            s3.head_bucket(Bucket=bucket)
    assert "drained, 1 container instance(s) deregistered" in destroyed.out
    assert deployer.running_instances() == []
    left = {g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]}
    assert insights not in left
    assert not any(group.startswith(f"airflow-{prefix}-mwaa-") for group in left)
    assert f"Done: everything deploy.sh created with prefix {prefix} is gone" in destroyed.out

    again = deployer.destroy("--prefix", prefix, "--yes")
    assert again.code == 0
    assert "nothing to delete" in again.out


def test_destroy_leaves_the_log_groups_of_a_deployment_whose_prefix_starts_the_same(
    deployer: Any,
) -> None:
    """The review's finding: log groups were deleted by a name prefix, so destroying prefix
    P also deleted those of a deployment named P-mwaa-x (its environment P-mwaa-x-mwaa logs
    to airflow-P-mwaa-x-mwaa-*) or P-ami-x. Exact names leave them alone."""
    prefix = deployer.prefix()
    ctx = deployer.context(prefix)
    logs = deployer.client("logs")
    own = [
        f"airflow-{prefix}-mwaa-Task",
        f"airflow-{prefix}-mwaa-WebServer",
        f"/aws/imagebuilder/{prefix}-ami-src-0123456789abcdef",
    ]
    others = [
        f"airflow-{prefix}-mwaa-x-mwaa-Task",
        f"/aws/imagebuilder/{prefix}-ami-x-ami-src-0123456789abcdef",
        f"/aws/ecs/containerinsights/{prefix}-ecs-cluster-2/performance",
    ]
    for name in own + others:
        logs.create_log_group(logGroupName=name)
    # The storage stack alone: destroy reaches the log groups at its end.
    Stacks(ctx).deploy("storage", {})
    result = deployer.destroy("--prefix", prefix, "--yes")
    assert result.code == 0, result.text
    left = {
        g["logGroupName"]
        for page in logs.get_paginator("describe_log_groups").paginate()
        for g in page["logGroups"]
    }
    assert not set(own) & left
    assert set(others) <= left


def test_pause_keeps_results_images_and_studies_says_the_run_history_goes_and_deploy_resumes(
    two_studies: Any,
) -> None:
    deployer = two_studies
    prefix = deployed(deployer)
    image_uri = deployer.outputs(f"{prefix}-study-option-pricing")["ImageUri"]
    results = deployer.outputs(f"{prefix}-storage")["ResultsBucketName"]
    s3 = deployer.client("s3")
    s3.put_object(Bucket=results, Key="sim/aggregate_results/r1/results.csv", Body=b"ebn0_db\n")
    # What MWAA would hold: the pause's question says its run history goes with it.
    deployer.client("cloudformation").create_stack(
        StackName=f"{prefix}-mwaa",
        TemplateBody=json.dumps(
            {"Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}
        ),
    )

    asked = deployer.destroy("--prefix", prefix, "--pause", stdin="no\n")
    assert asked.code == 1
    assert pause.HISTORY_WARNING in asked.out
    assert "run history" in asked.out
    paused = deployer.destroy("--prefix", prefix, "--pause", "--yes")
    assert paused.code == 0, paused.text
    assert "bucket " not in paused.out  # nothing is emptied
    assert [
        line.split(":")[0] for line in paused.out.splitlines() if line.startswith("==> Delete")
    ] == [f"==> Delete {prefix}-{layer}" for layer in ("mwaa", "ecs", "network")]
    assert set(deployer.stacks(prefix)) == {
        f"{prefix}-{layer}" for layer in ("storage", "image", "study-option-pricing", "study-tiny")
    }
    assert s3.get_object(Bucket=results, Key="sim/aggregate_results/r1/results.csv")
    assert "with an empty Airflow run history" in paused.out

    resumed = deployer.deploy("--prefix", prefix, "--skip", "mwaa")
    assert resumed.code == 0, resumed.text
    assert "build host i-" not in resumed.out
    assert deployer.outputs(f"{prefix}-study-option-pricing")["ImageUri"] == image_uri
    # The study stacks now name the new ECS stack's execution role.
    role = deployer.outputs(f"{prefix}-ecs")["TaskExecutionRoleArn"]
    for name in ("option_pricing", "tiny"):
        family = f"{prefix}-study-{name}"
        definition = deployer.client("ecs").describe_task_definition(taskDefinition=family)
        assert definition["taskDefinition"]["executionRoleArn"] == role


def test_the_storage_stack_is_emptied_and_deleted_again_when_its_delete_fails(
    deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Log records can land in a bucket while it is deleted: DELETE_FAILED, empty, retry."""
    prefix = deployer.prefix()
    ctx = deployer.context(prefix, assume_yes=True)
    Stacks(ctx).deploy("storage", {})
    delete = Stacks.delete
    attempts: list[str] = []

    def fails_once(self: Stacks, stack: str) -> None:
        attempts.append(stack)
        if len(attempts) == 1:
            raise destroy_module.DeployError(f"stack {stack} ended DELETE_FAILED: ...")
        delete(self, stack)

    monkeypatch.setattr(Stacks, "delete", fails_once)
    destroy_module.destroy(ctx, pausing=False)
    assert attempts == [f"{prefix}-storage"] * 2
    assert "(attempt 1); emptying the buckets again" in ctx.console.err.getvalue()
    assert ctx.console.out.getvalue().count("emptied s3://") == 6  # three buckets, twice
    assert deployer.stacks(prefix) == {}
