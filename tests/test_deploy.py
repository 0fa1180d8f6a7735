"""deploy.sh against a moto server on 127.0.0.1, run twice to show the re-run is a no-op.

moto has no CloudFormation support for AWS::MWAA::Environment, so the tests deploy with
`--skip mwaa` (storage, network, image and ECS stacks, then the uploads). The server is
tests/cloudformation/moto_server.py: moto with the change set, rollback, bucket versioning and
VPC deletion behaviour of AWS, a vCPU quota, and a simulated Windows build host (see its
docstring), so `--build-image` runs its whole AWS side: upload, launch, Run Command, wait,
terminate, and the log tail on failure.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import moto_server  # tests/cloudformation/moto_server.py, loaded by tests/conftest.py
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
# The AWS CLI v1 has its own venv (scripts/bootstrap.sh): it cannot share MWAA's pins.
AWSCLI_BIN = REPO / ".venv-awscli" / "bin"
REGION = "us-east-1"
PREFIX = "wbc"
LAYERS = ("storage", "network", "image", "ecs")


def copy_project(destination: Path) -> Path:
    """The files deploy.sh reads, so the test never touches the working tree's dags/."""
    for name in ("deploy.sh", "destroy.sh", "requirements-mwaa.txt", "scripts/aws_common.sh"):
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for directory in ("cloudformation", "dags", "docker", "plugins"):
        shutil.copytree(REPO / directory, destination / directory, ignore=ignore)
    return destination


def aws_env(endpoint: str | None, home: Path) -> dict[str, str]:
    """Fake credentials, no user AWS config, the AWS CLI v1 of .venv-awscli first on PATH."""
    (home / "aws-config").write_text("")
    env = {
        "PATH": f"{AWSCLI_BIN}:{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "DEPLOY_BUILD_POLL_SECONDS": "0.2",
        "DESTROY_POLL_SECONDS": "0.2",
    }
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def run(
    script: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(script), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with moto_server.running_server(log, REGION) as url:
        yield url


def client(name: str, url: str) -> Any:
    return boto3.client(
        name,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def snapshot(url: str, prefix: str = PREFIX) -> dict[str, Any]:
    """What a re-run must not change: stack events and outputs, every object version."""
    cloudformation = client("cloudformation", url)
    state: dict[str, Any] = {}
    for layer in LAYERS:
        stack = f"{prefix}-{layer}"
        state[f"{stack} events"] = len(
            cloudformation.describe_stack_events(StackName=stack)["StackEvents"]
        )
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        state[f"{stack} outputs"] = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    bucket = state[f"{prefix}-storage outputs"]["MwaaBucketName"]
    versions = client("s3", url).list_object_versions(Bucket=bucket).get("Versions", [])
    state["object versions"] = sorted((v["Key"], v["VersionId"]) for v in versions)
    return state


def running_instances(url: str) -> list[str]:
    reservations = client("ec2", url).describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


@dataclass
class Deployment:
    """`deploy.sh --skip mwaa --build-image` run once into the lifecycle's server, and what the
    test of that first deploy checks, observed right after it (before any other test acts)."""

    url: str
    prefix: str
    project: Path
    env: dict[str, str]
    first: subprocess.CompletedProcess[str]
    before: dict[str, Any]
    instances_after_first: list[str]
    pristine: bool = True
    # A stack was updated in place. moto then leaks the stack's log group when the stack is
    # deleted (AWS deletes it), so such a deployment cannot be paused and resumed.
    updated: bool = False
    destroyed: bool = False


class Lifecycle:
    """Deployments shared by the tests that take one through its life, in the files' order.

    Each deploy with --build-image costs about 40 AWS CLI calls, so the tests share them: the
    first deploy, its re-run and a real change (test_deploy.py); then, on a deployment no stack
    of which was updated in place (see `Deployment.updated`), pause and resume, then destroy
    (test_destroy.py). A test that needs the first deploy untouched (`pristine`) or a live one
    (`deployed`) gets a new one, under a new prefix, when the current one does not qualify, so
    each test also passes alone or in another order.
    """

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        self.current: Deployment | None = None
        self.count = 0

    def _deploy(self) -> Deployment:
        prefix = PREFIX if self.count == 0 else f"{PREFIX}{self.count}"
        self.count += 1
        home = self.root / prefix
        home.mkdir()
        project = copy_project(home)
        env = aws_env(self.url, home)
        first = run(
            project / "deploy.sh", env, "--prefix", prefix, "--skip", "mwaa", "--build-image"
        )
        assert first.returncode == 0, first.stderr + first.stdout
        self.current = Deployment(
            url=self.url,
            prefix=prefix,
            project=project,
            env=env,
            first=first,
            before=snapshot(self.url, prefix),
            instances_after_first=running_instances(self.url),
        )
        return self.current

    def pristine(self) -> Deployment:
        """The first deploy, untouched since; the caller may change it from now on."""
        deployment = self.current
        if deployment is None or not deployment.pristine:
            deployment = self._deploy()
        deployment.pristine = False
        return deployment

    def deployed(self, *, never_updated: bool = False) -> Deployment:
        """A deployment whose stacks exist (not destroyed), with no stack updated in place if
        `never_updated`; the caller may change it."""
        deployment = self.current
        if deployment is None or deployment.destroyed or (never_updated and deployment.updated):
            deployment = self._deploy()
        deployment.pristine = False
        return deployment


def test_deploy_builds_the_image_then_reruns_without_changes(lifecycle: Lifecycle) -> None:
    deployment = lifecycle.pristine()
    moto_url, project, env, prefix = (
        deployment.url,
        deployment.project,
        deployment.env,
        deployment.prefix,
    )
    first, before = deployment.first, deployment.before
    assert first.returncode == 0, first.stderr + first.stdout
    assert "build host i-" in first.stderr
    assert deployment.instances_after_first == []

    storage = before[f"{prefix}-storage outputs"]
    ecs = before[f"{prefix}-ecs outputs"]
    s3 = client("s3", moto_url)
    bucket = storage["MwaaBucketName"]
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    requirements = s3.get_object(Bucket=bucket, Key="requirements/requirements-mwaa.txt")
    assert requirements["Body"].read() == (project / "requirements-mwaa.txt").read_bytes()
    local_dags = {
        path.relative_to(project).as_posix()
        for path in (project / "dags").rglob("*")
        if path.is_file()
    }
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dags/").get("Contents", [])
    assert {item["Key"] for item in listed} == local_dags
    # MWAA gets requirements-mwaa.txt only; the local lock is never uploaded.
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {key.split("/")[0] for key in keys} == {"dags", "requirements", "build", "plugins"}
    assert not any("constraints" in key for key in keys)
    # plugins.zip holds plugins/ at its root (MWAA unpacks it into its plugins folder).
    plugins = s3.get_object(Bucket=bucket, Key="plugins/plugins.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(plugins)) as archive:
        zipped = {name for name in archive.namelist() if not name.endswith("/")}
    local_plugins = {
        path.relative_to(project / "plugins").as_posix()
        for path in (project / "plugins").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "windows_batch_results_plugin.py" in zipped
    assert zipped <= local_plugins
    # c5.xlarge: 8192 MiB nominal, 95 % reported, 2048 reserved -> 5734 MiB: 3 tasks of 1536.
    assert ecs["SlotsPerInstance"] == "3"
    repository_uri = before[f"{prefix}-image outputs"]["RepositoryUri"]
    repository, tag = ecs["ImageUri"].removeprefix(repository_uri.split("/")[0] + "/").split(":")
    assert ecs["ImageUri"].startswith(f"{repository_uri}:src-")
    images = client("ecr", moto_url).describe_images(repositoryName=repository)["imageDetails"]
    assert [image["imageTags"] for image in images] == [[tag]]
    assert f"requirements version: {requirements['VersionId']}" in first.stdout

    # Without --build-image the image of the same sources is found and nothing is rebuilt.
    second = run(project / "deploy.sh", env, "--prefix", prefix, "--skip", "mwaa")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "build host" not in second.stderr
    assert second.stdout.count("No changes to deploy") == len(LAYERS)
    assert "unchanged: s3://" in second.stdout
    assert snapshot(moto_url, prefix) == before

    deployment.updated = True
    third = run(
        project / "deploy.sh", env, "--prefix", prefix, "--skip", "mwaa", "--max-instances", "7"
    )
    assert third.returncode == 0, third.stderr + third.stdout
    after = snapshot(moto_url, prefix)
    assert after[f"{prefix}-ecs events"] > before[f"{prefix}-ecs events"]
    assert after[f"{prefix}-storage events"] == before[f"{prefix}-storage events"]
    assert after["object versions"] == before["object versions"]
    group = client("autoscaling", moto_url).describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 7, 0)


def stacks_of(url: str, prefix: str, region: str = REGION) -> dict[str, str]:
    cloudformation = boto3.client(
        "cloudformation",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return {
        stack["StackName"]: stack["StackStatus"]
        for stack in cloudformation.describe_stacks()["Stacks"]
        if stack["StackName"].startswith(f"{prefix}-")
    }


def test_deploy_without_an_image_is_refused_before_any_stack(tmp_path: Path, moto_url: str) -> None:
    project = copy_project(tmp_path)
    result = run(project / "deploy.sh", aws_env(moto_url, tmp_path), "--prefix", "wbn")
    assert result.returncode == 1, result.stderr + result.stdout
    assert "add --build-image (builds it on AWS) or --image-uri URI" in result.stdout
    assert "1 blocker(s)" in result.stderr
    assert stacks_of(moto_url, "wbn") == {}


def test_check_prints_the_preflight_and_changes_nothing(tmp_path: Path, moto_url: str) -> None:
    project = copy_project(tmp_path)
    env = aws_env(moto_url, tmp_path)
    args = ("--prefix", "wbk", "--image-uri", "example.com/bersim:1", "--check")
    fits = run(project / "deploy.sh", env, *args)
    assert fits.returncode == 0, fits.stderr + fits.stdout
    lines = fits.stdout.splitlines()
    for check in ("credentials", f"region {REGION}", "Windows Server 2022 ECS AMI", "vCPU quota"):
        assert any(line.split()[:1] and check in line and " ok " in line for line in lines), check
    assert "64 vCPUs (L-1216C47A) >= 40 needed (10 x c5.xlarge On-Demand)" in fits.stdout
    assert "stack wbk-storage" in fits.stdout
    too_many = run(project / "deploy.sh", env, *args, "--max-instances", "20")
    assert too_many.returncode == 1
    assert "64 vCPUs (L-1216C47A) < 80 needed" in too_many.stdout
    assert stacks_of(moto_url, "wbk") == {}


def test_a_region_without_mwaa_is_refused_with_the_regions_that_work(
    tmp_path: Path, moto_url: str
) -> None:
    project = copy_project(tmp_path)
    result = run(
        project / "deploy.sh",
        aws_env(moto_url, tmp_path),
        *("--prefix", "wbg", "--region", "mx-central-1", "--image-uri", "example.com/b:1"),
    )
    assert result.returncode == 1, result.stderr + result.stdout
    region_line = next(line for line in result.stdout.splitlines() if "region mx-central-1" in line)
    assert region_line.split()[2:7] == ["BLOCKER", "does", "not", "offer", "mwaa;"]
    assert " us-east-1 " in region_line + " "
    assert "mx-central-1" not in region_line.split("use one of:")[1]
    ami_line = next(line for line in result.stdout.splitlines() if "ECS AMI" in line)
    assert "BLOCKER" in ami_line.split()
    assert stacks_of(moto_url, "wbg", region="mx-central-1") == {}


def test_a_stack_left_in_rollback_complete_is_recreated_after_confirmation(
    tmp_path: Path, moto_url: str
) -> None:
    project = copy_project(tmp_path)
    env = aws_env(moto_url, tmp_path)
    args = ("--prefix", "wbr", "--skip", "ecs,mwaa")
    ecr = client("ecr", moto_url)
    ecr.create_repository(repositoryName="wbr/bersim")  # the image stack cannot create it
    failed = run(project / "deploy.sh", env, *args)
    assert failed.returncode != 0
    assert stacks_of(moto_url, "wbr")["wbr-image"] == "ROLLBACK_COMPLETE"
    ecr.delete_repository(repositoryName="wbr/bersim")

    refused = run(project / "deploy.sh", env, *args, stdin="no\n")
    assert refused.returncode == 1
    assert "wbr-image is in ROLLBACK_COMPLETE" in refused.stderr
    assert "not confirmed; wbr-image left as it is" in refused.stderr
    assert stacks_of(moto_url, "wbr")["wbr-image"] == "ROLLBACK_COMPLETE"

    recreated = run(project / "deploy.sh", env, *args, "--yes")
    assert recreated.returncode == 0, recreated.stderr + recreated.stdout
    assert "Deleting wbr-image (ROLLBACK_COMPLETE)" in recreated.stdout
    assert stacks_of(moto_url, "wbr")["wbr-image"] == "CREATE_COMPLETE"


def test_a_failed_build_prints_the_log_tail_and_terminates_the_host(tmp_path: Path) -> None:
    with moto_server.running_server(
        tmp_path / "server.log", REGION, env={"MOTO_IMAGE_BUILD_OUTCOME": "Failed"}
    ) as url:
        project = copy_project(tmp_path)
        result = run(
            project / "deploy.sh",
            aws_env(url, tmp_path),
            *("--prefix", "wbf", "--skip", "mwaa", "--build-image"),
        )
        assert result.returncode == 1, result.stderr + result.stdout
        assert "ended Failed" in result.stderr
        tail = result.stderr.split("last lines of", 1)[1]
        assert moto_server.BUILD_FAILURE_LINE in tail
        assert "Step 59/12" in tail
        assert "Step 1/12 " not in tail  # the tail, not the head
        assert running_instances(url) == []
        assert "wbf-ecs" not in stacks_of(url, "wbf")


def test_help(tmp_path: Path) -> None:
    result = run(REPO / "deploy.sh", aws_env(None, tmp_path), "--help")
    assert result.returncode == 0
    for option in (
        *("--region", "--prefix", "--instance-type", "--image-uri", "--build-image"),
        *("--check", "--yes"),
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--prefix", "Bad_Prefix"], "--prefix must be lowercase", id="prefix"),
        pytest.param(["--bogus"], "unknown option: --bogus", id="unknown-option"),
        pytest.param(["--skip", "everything"], "unknown step for --skip", id="skip"),
        pytest.param(
            ["--build-image", "--image-uri", "x/y:z"], "exclude each other", id="image-choice"
        ),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = run(REPO / "deploy.sh", aws_env(None, tmp_path), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_missing_aws_cli_is_reported_first(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    env = {**aws_env(None, tmp_path), "PATH": str(bin_dir)}
    result = run(REPO / "deploy.sh", env)
    assert result.returncode != 0
    assert "the AWS CLI ('aws') is not on PATH" in result.stderr


def test_missing_region_is_reported(tmp_path: Path) -> None:
    env = aws_env(None, tmp_path)
    del env["AWS_DEFAULT_REGION"]
    result = run(REPO / "deploy.sh", env)
    assert result.returncode != 0
    assert "no AWS region set; pass --region" in result.stderr


def test_missing_credentials_are_reported(tmp_path: Path) -> None:
    env = aws_env(None, tmp_path)
    del env["AWS_ACCESS_KEY_ID"]
    del env["AWS_SECRET_ACCESS_KEY"]
    result = run(REPO / "deploy.sh", env)
    assert result.returncode != 0
    assert "AWS credentials are missing or invalid" in result.stderr
    assert "Unable to locate credentials" in result.stderr
    assert "==> Stack" not in result.stdout


def test_runs_without_a_terminal(tmp_path: Path) -> None:
    """The scripts are ShellCheck clean and executable, as `make lint` and users expect."""
    for name in ("deploy.sh", "destroy.sh"):
        assert os.access(REPO / name, os.X_OK), name
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), str(REPO / "deploy.sh"), str(REPO / "destroy.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def preflight_line(stdout: str, check: str) -> str:
    return next(line for line in stdout.splitlines() if line.strip().startswith(check))


def test_spot_and_instance_types_are_checked_and_a_rerun_keeps_the_stacks_choice(
    tmp_path: Path, moto_url: str
) -> None:
    """--check resolves the capacity options; the tasks per instance are the minimum over the
    types (95 % of nominal memory minus 2048 MiB reserved, 1536 MiB and 1024 CPU units a task)."""
    usage = run(REPO / "deploy.sh", aws_env(None, tmp_path), "--help").stdout
    for option in ("--instance-types", "--spot", "--on-demand", "--on-demand-base"):
        assert f"  {option} " in usage, option
    project = copy_project(tmp_path)
    env = aws_env(moto_url, tmp_path)
    check = ("--prefix", "wbs", "--image-uri", "example.com/bersim:1", "--check")
    spot = run(
        project / "deploy.sh", env, *check,
        *("--spot", "--on-demand-base", "1", "--instance-types", "m5.xlarge,c5.xlarge"),
    )  # fmt: skip
    assert spot.returncode == 0, spot.stderr + spot.stdout
    line = preflight_line(spot.stdout, "instance types")
    assert line.split()[2] == "ok", line
    # m5.xlarge 16384 MiB -> 13516 registered: 8 by memory, 4 by CPU; c5.xlarge 8192 -> 3.
    assert "spot above 1 on-demand: m5.xlarge 4, c5.xlarge 3 tasks per instance -> 3" in line
    assert "needed (1 x m5.xlarge On-Demand)" in preflight_line(spot.stdout, "vCPU quota")
    # Spot capacity has its own quota: the 9 instances above the base need 36 Spot vCPUs.
    spot_quota = preflight_line(spot.stdout, "Spot vCPU quota")
    assert spot_quota.split()[3] == "ok", spot_quota
    assert "64 vCPUs (L-34B43A08) >= 36 needed (9 x m5.xlarge Spot)" in spot_quota
    too_much_spot = run(
        project / "deploy.sh", env, *check,
        *("--spot", "--on-demand-base", "1", "--max-instances", "20"),
    )  # fmt: skip
    assert too_much_spot.returncode == 1
    spot_quota = preflight_line(too_much_spot.stdout, "Spot vCPU quota")
    assert "64 vCPUs (L-34B43A08) < 76 needed (19 x c5.xlarge Spot)" in spot_quota
    assert " ok " in preflight_line(too_much_spot.stdout, "vCPU quota")  # 4 On-Demand vCPUs

    refused = {
        "c5.xlarge,m6g.xlarge": "m6g.xlarge is arm64, not x86_64",
        "c5.xlarge,c5.2xlarge": "of one size: c5.2xlarge has 8 vCPUs, c5.xlarge 4",
        "c5.xlarge,c9.bogus": "unknown instance type c9.bogus",
    }
    for types, message in refused.items():
        result = run(project / "deploy.sh", env, *check, "--instance-types", types)
        assert result.returncode == 1, types
        assert "BLOCKER" in preflight_line(result.stdout, "instance types").split(), types
        assert message in result.stdout, result.stdout
    bad = run(project / "deploy.sh", env, *check, "--on-demand", "--on-demand-base", "2")
    assert bad.returncode != 0
    assert "--on-demand-base applies to --spot only" in bad.stderr

    # A stack deployed with Spot: a run without the options keeps its types, option and base.
    cloudformation = client("cloudformation", moto_url)
    network = "wbs-network"
    cloudformation.create_stack(
        StackName=network, TemplateBody=(REPO / "cloudformation" / "network.yaml").read_text()
    )
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cloudformation.describe_stacks(StackName=network)["Stacks"][0]["Outputs"]
    }
    parameters = {
        "InstanceType": "c6i.xlarge",
        "InstanceType2": "c5a.xlarge",
        "InstanceType3": "",
        "InstanceType4": "",
        "PurchaseOption": "spot",
        "OnDemandBaseCapacity": "2",
        "PrivateSubnetIds": outputs["PrivateSubnetIds"],
        "InstanceSecurityGroupId": outputs["EcsInstanceSecurityGroupId"],
        "ResultsBucketName": "wbs-results",
        "ImageUri": "example.com/bersim:1",
    }
    cloudformation.create_stack(
        StackName="wbs-ecs",
        TemplateBody=(REPO / "cloudformation" / "ecs.yaml").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    kept = run(project / "deploy.sh", env, *check)
    assert kept.returncode == 0, kept.stderr + kept.stdout
    assert "Instance types c6i.xlarge,c5a.xlarge (kept from stack wbs-ecs)" in kept.stdout
    assert "Purchase option spot (kept from stack wbs-ecs)" in kept.stdout
    line = preflight_line(kept.stdout, "instance types")
    assert "spot above 2 on-demand: c6i.xlarge 3, c5a.xlarge 3 tasks per instance -> 3" in line
    switched = run(project / "deploy.sh", env, *check, "--on-demand")
    assert "on-demand: c6i.xlarge 3, c5a.xlarge 3" in preflight_line(switched.stdout, "instance")


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
    project: Path,
    env: dict[str, str],
    prefix: str,
    *,
    old_ami: str,
    old_billed: list[str],
    moto_url: str,
) -> tuple[str, list[str]]:
    """--no-bake-ami, then --bake-ami again; the new AMI and what it bills."""
    args = ("--prefix", prefix, "--skip", "mwaa")
    ec2 = client("ec2", moto_url)

    def outputs(layer: str) -> dict[str, str]:
        stack = client("cloudformation", moto_url).describe_stacks(StackName=f"{prefix}-{layer}")
        return {o["OutputKey"]: o["OutputValue"] for o in stack["Stacks"][0]["Outputs"]}

    # --no-bake-ami: the hosts launch from the public AMI again, and the baked one stops billing.
    public = run(project / "deploy.sh", env, *args, "--no-bake-ami")
    assert public.returncode == 0, public.stderr + public.stdout
    ssm = client("ssm", moto_url)
    public_ami = ssm.get_parameter(Name=moto_server.WINDOWS_AMI_PARAMETER)["Parameter"]["Value"]
    assert outputs("ecs")["InstanceAmiId"] == public_ami != old_ami
    assert f"{prefix}-ami" not in stacks_of(moto_url, prefix)
    assert_nothing_left(ec2, old_ami, old_billed)

    # Baked again (same tag, new AMI), for the pause and destroy that follow.
    rebaked = run(project / "deploy.sh", env, *args, "--bake-ami")
    assert rebaked.returncode == 0, rebaked.stderr + rebaked.stdout
    ami_id = outputs("ami")["BakedAmiId"]
    assert outputs("ecs")["InstanceAmiId"] == ami_id
    return ami_id, billed_snapshots(ec2, ami_id)


def test_bake_ami_launches_from_it_keeps_it_on_pause_and_destroy_leaves_nothing_billing(
    tmp_path: Path, moto_url: str
) -> None:
    """--bake-ami against the moto server's Image Builder and Fast Launch (its docstring)."""
    prefix = "wba"
    project = copy_project(tmp_path)
    env = {**aws_env(moto_url, tmp_path), "FAST_LAUNCH_POLL_SECONDS": "0.2"}
    args = ("--prefix", prefix, "--skip", "mwaa")
    cloudformation, ec2 = client("cloudformation", moto_url), client("ec2", moto_url)

    def outputs(layer: str) -> dict[str, str]:
        stack = cloudformation.describe_stacks(StackName=f"{prefix}-{layer}")["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    baked = run(project / "deploy.sh", env, *args, "--build-image", "--bake-ami")
    assert baked.returncode == 0, baked.stderr + baked.stdout
    ami_id = outputs("ami")["BakedAmiId"]
    ecs = outputs("ecs")
    # The AMI holds exactly the image the task definition runs, and the hosts launch from it.
    assert outputs("ami")["BakedImageUri"] == ecs["ImageUri"]
    assert ecs["InstanceAmiId"] == ami_id
    group = client("autoscaling", moto_url).describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    template = ec2.describe_launch_template_versions(
        LaunchTemplateId=group["MixedInstancesPolicy"]["LaunchTemplate"][
            "LaunchTemplateSpecification"
        ]["LaunchTemplateId"],
        Versions=["$Latest"],
    )["LaunchTemplateVersions"][0]
    assert template["LaunchTemplateData"]["ImageId"] == ami_id
    tag = ecs["ImageUri"].rsplit(":", 1)[1]
    image = ec2.describe_images(ImageIds=[ami_id])["Images"][0]
    assert {t["Key"]: t["Value"] for t in image["Tags"]}["windows-batch-compute:image-tag"] == tag
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
    again = run(project / "deploy.sh", env, *args)
    assert again.returncode == 0, again.stderr + again.stdout
    assert again.stdout.count("No changes to deploy") == len(LAYERS) + 1
    assert f"{ami_id} has {prefix}/bersim:{tag}" in again.stdout
    assert outputs("ecs")["InstanceAmiId"] == ami_id
    (refreshed,) = ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"]
    assert refreshed["LaunchTemplate"]["Version"] == "2"
    assert refreshed["MaxParallelLaunches"] == fast_launch["MaxParallelLaunches"]

    ami_id, billed = no_bake_then_bake_again(
        project, env, prefix, old_ami=ami_id, old_billed=billed, moto_url=moto_url
    )

    paused = run(project / "destroy.sh", env, "--prefix", prefix, "--pause", "--yes")
    assert paused.returncode == 0, paused.stderr + paused.stdout
    assert set(stacks_of(moto_url, prefix)) == {
        f"{prefix}-{s}" for s in ("storage", "image", "ami")
    }
    assert ec2.describe_images(ImageIds=[ami_id])["Images"]
    assert ec2.describe_fast_launch_images(ImageIds=[ami_id])["FastLaunchImages"]

    destroyed = run(project / "destroy.sh", env, "--prefix", prefix, "--yes")
    assert destroyed.returncode == 0, destroyed.stderr + destroyed.stdout
    assert f"disabling EC2 Fast Launch for {ami_id}" in destroyed.stdout
    assert stacks_of(moto_url, prefix) == {}
    assert_nothing_left(ec2, ami_id, billed)
