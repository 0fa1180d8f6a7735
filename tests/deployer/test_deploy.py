"""The deploy against the moto server, in process: stacks, image, uploads, re-runs, preflight.

moto has no CloudFormation support for AWS::MWAA::Environment, so deploys run with
`--skip mwaa`; the MWAA stack's parameters are checked against mwaa.yaml instead.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from botocore.stub import Stubber

from deployer import deploy as deploy_module
from deployer import uploads
from deployer.capacity import Capacity
from deployer.plan import DeployOptions, Plan
from deployer.stacks import Stacks, read_template, template_parameters

LAYERS = ("storage", "network", "image", "ecs")


def snapshot(deployer: Any, prefix: str) -> dict[str, Any]:
    """What a re-run must not change: stack events and outputs, every object version."""
    cloudformation = deployer.client("cloudformation")
    state: dict[str, Any] = {}
    for layer in LAYERS:
        stack = f"{prefix}-{layer}"
        state[f"{stack} events"] = len(
            cloudformation.describe_stack_events(StackName=stack)["StackEvents"]
        )
        state[f"{stack} outputs"] = deployer.outputs(stack)
    bucket = state[f"{prefix}-storage outputs"]["MwaaBucketName"]
    versions = deployer.client("s3").list_object_versions(Bucket=bucket).get("Versions", [])
    state["object versions"] = sorted((v["Key"], v["VersionId"]) for v in versions)
    return state


def step_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("==> ")]


def assert_uploaded(deployer: Any, *, bucket: str) -> dict[str, Any]:
    """dags/, requirements-mwaa.txt and plugins.zip in the MWAA bucket, and nothing else."""
    s3 = deployer.client("s3")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    # Re-runs compare ETags with MD5s: true for PutObject under SSE-S3, not SSE-KMS (S3 API
    # reference, Object: ETag); moto gives an MD5 ETag either way, so the rule is held here.
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    project = deployer.project
    requirements = s3.get_object(Bucket=bucket, Key=uploads.REQUIREMENTS_KEY)
    assert requirements["Body"].read() == project.mwaa_requirements.read_bytes()
    local_dags = {
        "dags/" + path.relative_to(project.dags).as_posix()
        for path in project.dags.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dags/").get("Contents", [])
    assert {item["Key"] for item in listed} == local_dags
    # MWAA gets requirements-mwaa.txt only; the local lock is never uploaded.
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {key.split("/")[0] for key in keys} == {"dags", "requirements", "build", "plugins"}
    assert not any("constraints" in key for key in keys)
    # The build lease is released: only the sources stay under build/.
    assert {key for key in keys if key.startswith("build/")} == {"build/docker-source.zip"}
    # plugins.zip holds plugins/ at its root (MWAA unpacks it into its plugins folder).
    plugins = s3.get_object(Bucket=bucket, Key=uploads.PLUGINS_KEY)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(plugins)) as archive:
        zipped = {name for name in archive.namelist() if not name.endswith("/")}
    assert "windows_batch_results_plugin.py" in zipped
    assert all((project.plugins / name).is_file() for name in zipped)
    return requirements


def test_first_deploy_builds_then_a_rerun_changes_nothing_and_a_change_updates_one_stack(
    deployer: Any,
) -> None:
    prefix = deployer.prefix()
    args = ("--prefix", prefix, "--skip", "mwaa")
    first = deployer.deploy(*args, "--build-image")
    assert first.code == 0, first.text
    # One line per step, each with its duration.
    steps = step_lines(first.out)
    for layer in LAYERS:
        assert any(
            re.fullmatch(rf"==> Stack {prefix}-{layer}: created \(\d+\.\d s\)", line)
            for line in steps
        ), steps
    assert any(re.fullmatch(rf"==> Image {prefix}/bersim:src-\w+: built \(.+\)", s) for s in steps)
    assert "build host i-" in first.out
    assert deployer.running_instances() == []

    before = snapshot(deployer, prefix)
    storage, ecs = before[f"{prefix}-storage outputs"], before[f"{prefix}-ecs outputs"]
    requirements = assert_uploaded(deployer, bucket=storage["MwaaBucketName"])
    # c5.xlarge: 8192 MiB nominal, 95 % reported, 2048 reserved -> 5734 MiB: 3 tasks of 1536.
    assert ecs["SlotsPerInstance"] == "3"
    repository_uri = before[f"{prefix}-image outputs"]["RepositoryUri"]
    tag = ecs["ImageUri"].rsplit(":", 1)[1]
    assert ecs["ImageUri"] == f"{repository_uri}:{tag}"
    images = deployer.client("ecr").describe_images(repositoryName=f"{prefix}/bersim")
    assert [image["imageTags"] for image in images["imageDetails"]] == [[tag]]
    assert f"requirements version: {requirements['VersionId']}" in first.out

    # Without --build-image the image of the same sources is found and nothing is rebuilt.
    second = deployer.deploy(*args)
    assert second.code == 0, second.text
    assert "build host i-" not in second.out
    assert [line.split(": ")[1].split(" (")[0] for line in step_lines(second.out)[1:6]] == [
        "ok",
        *(["no changes"] * len(LAYERS)),
    ]
    assert second.out.count("unchanged: s3://") == 2
    assert "dags/: 0 uploaded, 0 deleted" in second.out
    assert snapshot(deployer, prefix) == before

    third = deployer.deploy(*args, "--max-instances", "7")
    assert third.code == 0, third.text
    assert f"==> Stack {prefix}-ecs: updated" in third.out
    after = snapshot(deployer, prefix)
    assert after[f"{prefix}-ecs events"] > before[f"{prefix}-ecs events"]
    for layer in ("storage", "network", "image"):
        assert after[f"{prefix}-{layer} events"] == before[f"{prefix}-{layer} events"]
    assert after["object versions"] == before["object versions"]
    group = deployer.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 7, 0)


def test_a_changed_dag_is_uploaded_a_removed_one_deleted_and_the_rest_left(
    deployer: Any, tmp_path: Any
) -> None:
    """dags/ is mirrored by content: a re-run after a change touches only what changed."""
    prefix = deployer.prefix()
    ctx = deployer.context(prefix)
    s3 = deployer.client("s3")
    bucket = f"{prefix}-mwaa"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    dags = tmp_path / "dags"
    (dags / "pkg" / "__pycache__").mkdir(parents=True)
    (dags / "a.py").write_text("a = 1\n")
    (dags / "pkg" / "b.py").write_text("b = 1\n")
    (dags / "pkg" / "__pycache__" / "b.cpython-312.pyc").write_bytes(b"\0")
    first = uploads.sync_dags(s3, bucket=bucket, directory=dags)
    assert first == uploads.SyncResult(uploaded=2, deleted=0, unchanged=0)
    (dags / "a.py").write_text("a = 2\n")
    (dags / "pkg" / "b.py").unlink()
    (dags / "c.py").write_text("c = 1\n")
    second = uploads.sync_dags(s3, bucket=bucket, directory=dags)
    assert second == uploads.SyncResult(uploaded=2, deleted=1, unchanged=0)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"dags/a.py", "dags/c.py"}
    assert uploads.sync_dags(s3, bucket=bucket, directory=dags) == uploads.SyncResult(0, 0, 2)
    del ctx


def test_a_deploy_without_an_image_is_refused_before_any_stack(deployer: Any) -> None:
    prefix = deployer.prefix()
    result = deployer.deploy("--prefix", prefix)
    assert result.code == 1, result.text
    assert "BLOCKER" in result.line("image").split()
    assert "add --build-image (builds it on AWS) or --image-uri URI" in result.out
    assert "preflight: 1 blocker(s) above; nothing was changed" in result.err
    assert deployer.stacks(prefix) == {}


def test_check_prints_the_preflight_as_a_table_and_changes_nothing(deployer: Any) -> None:
    prefix = deployer.prefix()
    args = ("--prefix", prefix, "--image-uri", "example.com/bersim:1", "--check")
    fits = deployer.deploy(*args)
    assert fits.code == 0, fits.text
    lines = fits.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["check", "state", "detail"])
    # A header, a rule under each column, then one row per finding, columns aligned.
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    state_column = lines[header].index("state")
    rows = lines[header + 2 : header + 2 + 15]
    for check in ("credentials", f"region {deployer.aws().region}", "Windows Server 2022 ECS AMI"):
        row = fits.line(check)
        assert row in rows
        assert row[state_column:].startswith("ok "), row
    assert "64 vCPUs (L-1216C47A) >= 40 needed (10 x c5.xlarge On-Demand)" in fits.out
    assert f"stack {prefix}-storage" in fits.out
    assert "==> Preflight (changes nothing): ok" in fits.out
    too_many = deployer.deploy(*args, "--max-instances", "20")
    assert too_many.code == 1
    assert "64 vCPUs (L-1216C47A) < 80 needed" in too_many.line("vCPU quota")
    assert "==> Preflight (changes nothing): 1 blocker(s)" in too_many.out
    assert deployer.stacks(prefix) == {}


def test_a_region_without_mwaa_is_refused_with_the_regions_that_work(deployer: Any) -> None:
    prefix = deployer.prefix()
    result = deployer.deploy(
        "--prefix", prefix, "--region", "mx-central-1", "--image-uri", "example.com/b:1"
    )
    assert result.code == 1, result.text
    region = result.line("region mx-central-1")
    assert "BLOCKER does not offer mwaa; use one of:" in " ".join(region.split())
    assert " us-east-1 " in region + " "
    assert "mx-central-1" not in region.split("use one of:")[1]
    assert "BLOCKER" in result.line("Windows Server 2022 ECS AMI").split()
    assert deployer.stacks(prefix, region="mx-central-1") == {}


def test_spot_and_instance_types_are_checked_and_a_rerun_keeps_the_stacks_choice(
    deployer: Any,
) -> None:
    """--check resolves the capacity options; the tasks per instance are the minimum over the
    types (95 % of nominal memory minus 2048 MiB reserved, 1536 MiB and 1024 CPU units a task)."""
    prefix = deployer.prefix()
    check = ("--prefix", prefix, "--image-uri", "example.com/bersim:1", "--check")
    spot = deployer.deploy(
        *check, "--spot", "--on-demand-base", "1", "--instance-types", "m5.xlarge,c5.xlarge"
    )
    assert spot.code == 0, spot.text
    line = spot.line("instance types")
    # m5.xlarge 16384 MiB -> 13516 registered: 8 by memory, 4 by CPU; c5.xlarge 8192 -> 3.
    assert "spot above 1 on-demand: m5.xlarge 4, c5.xlarge 3 tasks per instance -> 3" in line
    assert "needed (1 x m5.xlarge On-Demand)" in spot.line("vCPU quota")
    # Spot capacity has its own quota: the 9 instances above the base need 36 Spot vCPUs.
    assert "64 vCPUs (L-34B43A08) >= 36 needed (9 x m5.xlarge Spot)" in spot.line("Spot vCPU")
    too_much_spot = deployer.deploy(
        *check, "--spot", "--on-demand-base", "1", "--max-instances", "20"
    )
    assert too_much_spot.code == 1
    spot_quota = too_much_spot.line("Spot vCPU quota")
    assert "BLOCKER" in spot_quota.split()
    assert "64 vCPUs (L-34B43A08) < 76 needed (19 x c5.xlarge Spot)" in spot_quota
    assert " ok " in too_much_spot.line("vCPU quota")  # 4 On-Demand vCPUs

    refused = {
        "c5.xlarge,m6g.xlarge": "m6g.xlarge is arm64, not x86_64",
        "c5.xlarge,c5.2xlarge": "of one size: c5.2xlarge has 8 vCPUs, c5.xlarge 4",
        "c5.xlarge,c9.bogus": "unknown instance type c9.bogus",
    }
    for types, message in refused.items():
        result = deployer.deploy(*check, "--instance-types", types)
        assert result.code == 1, types
        assert "BLOCKER" in result.line("instance types").split(), types
        assert message in result.out, result.out
    bad = deployer.deploy(*check, "--on-demand", "--on-demand-base", "2")
    assert bad.code == 1
    assert "--on-demand-base applies to --spot only" in bad.err

    # A stack deployed with Spot: a run without the options keeps its types, option and base.
    cloudformation = deployer.client("cloudformation")
    network = f"{prefix}-network"
    cloudformation.create_stack(
        StackName=network, TemplateBody=deployer.project.template("network").read_text()
    )
    outputs = deployer.outputs(network)
    parameters = {
        "InstanceType": "c6i.xlarge",
        "InstanceType2": "c5a.xlarge",
        "InstanceType3": "",
        "InstanceType4": "",
        "PurchaseOption": "spot",
        "OnDemandBaseCapacity": "2",
        "PrivateSubnetIds": outputs["PrivateSubnetIds"],
        "InstanceSecurityGroupId": outputs["EcsInstanceSecurityGroupId"],
        "ResultsBucketName": f"{prefix}-results",
        "ImageUri": "example.com/bersim:1",
    }
    cloudformation.create_stack(
        StackName=f"{prefix}-ecs",
        TemplateBody=deployer.project.template("ecs").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    kept = deployer.deploy(*check)
    assert kept.code == 0, kept.text
    assert f"Instance types c6i.xlarge,c5a.xlarge (kept from stack {prefix}-ecs)" in kept.out
    assert f"Purchase option spot (kept from stack {prefix}-ecs)" in kept.out
    line = kept.line("instance types")
    assert "spot above 2 on-demand: c6i.xlarge 3, c5a.xlarge 3 tasks per instance -> 3" in line
    switched = deployer.deploy(*check, "--on-demand")
    assert "on-demand: c6i.xlarge 3, c5a.xlarge 3" in switched.line("instance types")


def test_the_mwaa_stack_gets_every_parameter_it_needs(deployer: Any, monkeypatch: Any) -> None:
    """moto cannot create the environment: the parameters deploy_mwaa passes are checked
    against mwaa.yaml (each one it declares without a default is given, none unknown)."""
    prefix = deployer.prefix()
    ctx = deployer.context(prefix)
    stacks = Stacks(ctx)
    ecs_outputs = {
        key: f"<{key}>"
        for key in [
            "ClusterName",
            "AutoScalingGroupName",
            "TaskDefinitionFamily",
            "ContainerName",
            "LogGroupName",
            "LogStreamPrefix",
            "SlotsPerInstance",
            "InstanceTypes",
            "PurchaseOption",
            "OnDemandBaseCapacity",
            "TaskRoleArn",
            "TaskExecutionRoleArn",
        ]
    }
    stacks._outputs[f"{prefix}-ecs"] = ecs_outputs
    stacks._outputs[f"{prefix}-network"] = {"MwaaSecurityGroupId": "sg-1"}
    passed: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(
        stacks, "deploy", lambda layer, parameters, **_: passed.setdefault(layer, parameters)
    )
    capacity = Capacity(("c5.xlarge",), "on-demand", 0, 10)
    plan = Plan(options=DeployOptions(prefix=prefix), capacity=capacity, baking=True, run="r")
    deploy_module.deploy_mwaa(
        ctx,
        stacks,
        plan,
        versions=uploads.Versions(requirements="v1", plugins="v2"),
        mwaa_bucket="mwaa-bucket",
        results_bucket="results-bucket",
        subnets="subnet-1,subnet-2",
    )
    parameters = passed["mwaa"]
    declared = read_template(deployer.project.template("mwaa"))["Parameters"]
    required = {name for name, spec in declared.items() if "Default" not in spec}
    assert required <= set(parameters)
    assert set(parameters) <= set(template_parameters(deployer.project.template("mwaa")))
    assert parameters["ClusterName"] == "<ClusterName>"
    assert (parameters["InstanceBootSeconds"], parameters["ImagePullSeconds"]) == ("315", "0")
    assert parameters["PluginsS3ObjectVersion"] == "v2"
    assert parameters["RequirementsS3ObjectVersion"] == "v1"


def test_image_uri_runs_that_image_without_a_build_and_cannot_be_baked(deployer: Any) -> None:
    prefix = deployer.prefix()
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/other/image:7"
    result = deployer.deploy("--prefix", prefix, "--skip", "mwaa", "--image-uri", uri)
    assert result.code == 0, result.text
    assert f"--image-uri {uri}" in result.line("image")
    assert deployer.outputs(f"{prefix}-ecs")["ImageUri"] == uri
    assert "build host i-" not in result.out
    baked = deployer.deploy("--prefix", prefix, "--image-uri", uri, "--bake-ami")
    assert baked.code == 1
    assert "--bake-ami bakes the image stack's image; it excludes --image-uri" in baked.err


def test_the_next_steps_name_the_airflow_ui_and_the_rest_api_calls(deployer: Any) -> None:
    """moto's server does not route MWAA: its GetEnvironment answer is canned."""
    ctx = deployer.context("wbn")
    mwaa = ctx.aws.client("mwaa")
    with Stubber(mwaa) as stub:
        stub.add_response(
            "get_environment",
            {"Environment": {"Name": "wbn-mwaa", "WebserverUrl": "abc.airflow.amazonaws.com"}},
            {"Name": "wbn-mwaa"},
        )
        deploy_module.print_next_steps(ctx, environment="wbn-mwaa")
    out = ctx.console.out.getvalue()
    assert "Airflow UI: https://abc.airflow.amazonaws.com" in out
    assert "--name wbn-mwaa --method POST" in out
    assert f"--path /dags/{deploy_module.DAG_ID}/dagRuns" in out
