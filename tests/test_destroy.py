"""destroy.sh against a moto server: asks first, empties every object version, deletes in order,
drains the cluster before its stack goes, and removes the log groups ECS creates itself.

The stacks come from deploy.sh `--skip mwaa` (moto cannot create the MWAA environment).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[1]


helpers = sys.modules["test_deploy_helpers"]  # test_deploy.py, loaded by tests/conftest.py


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with helpers.moto_server.running_server(log, helpers.REGION) as url:
        yield url


def stack_names(cloudformation: Any) -> set[str]:
    return {stack["StackName"] for stack in cloudformation.describe_stacks()["Stacks"]}


def test_pause_keeps_results_and_image_and_deploy_resumes_without_a_rebuild(
    lifecycle: Any,
) -> None:
    """On the shared deployment (conftest.py), which test_destroy_asks_... destroys next."""
    deployment = lifecycle.deployed(never_updated=True)
    moto_url, project, env = deployment.url, deployment.project, deployment.env
    prefix = deployment.prefix
    args = ("--prefix", prefix, "--skip", "mwaa")
    cloudformation = helpers.client("cloudformation", moto_url)

    def outputs(layer: str) -> dict[str, str]:
        stack = cloudformation.describe_stacks(StackName=f"{prefix}-{layer}")["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    image_uri = outputs("ecs")["ImageUri"]
    results = outputs("storage")["ResultsBucketName"]
    s3 = helpers.client("s3", moto_url)
    s3.put_object(Bucket=results, Key="sim/aggregate_results/r1/results.csv", Body=b"ebn0_db\n")

    paused = helpers.run(project / "destroy.sh", env, "--prefix", prefix, "--pause", "--yes")
    assert paused.returncode == 0, paused.stderr + paused.stdout
    assert "bucket " not in paused.stdout  # nothing is emptied
    assert {s for s in stack_names(cloudformation) if s.startswith(f"{prefix}-")} == {
        f"{prefix}-storage",
        f"{prefix}-image",
    }
    assert s3.get_object(Bucket=results, Key="sim/aggregate_results/r1/results.csv")

    resumed = helpers.run(project / "deploy.sh", env, *args)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "build host" not in resumed.stderr
    assert outputs("ecs")["ImageUri"] == image_uri


def test_destroy_asks_then_empties_versioned_buckets_and_deletes_stacks_in_order(
    lifecycle: Any,
) -> None:
    """On the shared deployment (conftest.py), after the pause test resumed it, if it ran."""
    deployment = lifecycle.deployed()
    deployment.destroyed = True  # whatever happens below, no later test may count on it
    moto_url, project, env = deployment.url, deployment.project, deployment.env
    prefix = deployment.prefix

    cloudformation = helpers.client("cloudformation", moto_url)
    s3 = helpers.client("s3", moto_url)
    storage = {
        o["OutputKey"]: o["OutputValue"]
        for o in cloudformation.describe_stacks(StackName=f"{prefix}-storage")["Stacks"][0][
            "Outputs"
        ]
    }
    mwaa_bucket, results_bucket = storage["MwaaBucketName"], storage["ResultsBucketName"]
    # Two versions and a delete marker in the versioned bucket, results in the other.
    s3.put_object(Bucket=mwaa_bucket, Key="dags/old.py", Body=b"v1")
    s3.put_object(Bucket=mwaa_bucket, Key="dags/old.py", Body=b"v2")
    s3.delete_object(Bucket=mwaa_bucket, Key="dags/old.py")
    for index in range(3):
        s3.put_object(
            Bucket=results_bucket, Key=f"sim/task_results/r/task-{index:05d}.json", Body=b"{}"
        )
    # A container instance still registered (its instance going away), as ECS leaves it for a
    # while after the group terminates the instance; and Container Insights' own log group.
    ecs_outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cloudformation.describe_stacks(StackName=f"{prefix}-ecs")["Stacks"][0]["Outputs"]
    }
    cluster = ecs_outputs["ClusterName"]
    helpers.client("autoscaling", moto_url).set_desired_capacity(
        AutoScalingGroupName=ecs_outputs["AutoScalingGroupName"], DesiredCapacity=1
    )
    instance = helpers.client("ec2", moto_url).describe_instances(
        InstanceIds=helpers.running_instances(moto_url)[:1]
    )["Reservations"][0]["Instances"][0]
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
    helpers.client("ecs", moto_url).register_container_instance(
        cluster=cluster, instanceIdentityDocument=json.dumps(document)
    )
    insights = f"/aws/ecs/containerinsights/{cluster}/performance"
    logs = helpers.client("logs", moto_url)
    logs.create_log_group(logGroupName=insights)
    listed = s3.list_object_versions(Bucket=mwaa_bucket)
    assert len(listed["DeleteMarkers"]) == 1
    expected = {f"{prefix}-{layer}" for layer in helpers.LAYERS}
    assert expected <= stack_names(cloudformation)

    refused = helpers.run(project / "destroy.sh", env, "--prefix", prefix, stdin="no\n")
    assert refused.returncode != 0
    assert "not confirmed; nothing deleted" in refused.stderr
    assert f"bucket {mwaa_bucket}" in refused.stdout
    assert expected <= stack_names(cloudformation)

    destroyed = helpers.run(project / "destroy.sh", env, "--prefix", prefix, "--yes")
    assert destroyed.returncode == 0, destroyed.stderr + destroyed.stdout
    order = [line for line in destroyed.stdout.splitlines() if line.startswith("==> Deleting")]
    assert order == [
        f"==> Deleting stack {prefix}-{layer}" for layer in ("ecs", "image", "network", "storage")
    ]
    assert not expected & stack_names(cloudformation)
    for bucket in (mwaa_bucket, results_bucket, storage["AccessLogsBucketName"]):
        with pytest.raises(ClientError, match=r"NoSuchBucket|Not Found|404"):
            s3.head_bucket(Bucket=bucket)

    assert "deregistered " in destroyed.stdout
    assert logs.describe_log_groups(logGroupNamePrefix=insights)["logGroups"] == []
    assert helpers.running_instances(moto_url) == []

    again = helpers.run(project / "destroy.sh", env, "--prefix", prefix, "--yes")
    assert again.returncode == 0
    assert "nothing to delete" in again.stdout
