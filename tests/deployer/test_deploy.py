"""The deploy against the moto server, in process: stacks, studies, images, uploads, re-runs,
preflight.

moto has no CloudFormation support for AWS::MWAA::Environment, so deploys run with
`--skip mwaa`; the MWAA stack's parameters are checked against mwaa.yaml instead.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from typing import Any

from botocore.stub import Stubber

from deployer import deploy as deploy_module
from deployer import studies as studies_module
from deployer import uploads
from deployer.capacity import Capacity, InstanceTypes
from deployer.engine import catalog
from deployer.plan import DeployOptions, Plan
from deployer.stacks import Stacks, read_template, template_parameters

LAYERS = ("storage", "network", "image", "ecs")


def snapshot(deployer: Any, prefix: str, studies: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a re-run must not change: stack events and outputs (of the fixed stacks and of
    the study stacks `<prefix>-study-<each of studies>`), task definition revisions, every
    object version."""
    cloudformation = deployer.client("cloudformation")
    state: dict[str, Any] = {}
    for stack in [f"{prefix}-{layer}" for layer in LAYERS] + [
        f"{prefix}-study-{name}" for name in studies
    ]:
        state[f"{stack} events"] = len(
            cloudformation.describe_stack_events(StackName=stack)["StackEvents"]
        )
        state[f"{stack} outputs"] = deployer.outputs(stack)
    bucket = state[f"{prefix}-storage outputs"]["MwaaBucketName"]
    versions = deployer.client("s3").list_object_versions(Bucket=bucket).get("Versions", [])
    state["object versions"] = sorted((v["Key"], v["VersionId"]) for v in versions)
    state["task definitions"] = sorted(
        deployer.client("ecs").list_task_definitions(familyPrefix=f"{prefix}-study-")[
            "taskDefinitionArns"
        ]
    )
    return state


def step_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("==> ")]


def step_results(out: str) -> dict[str, str]:
    """{step title: its result word(s)} of the ==> lines."""
    found = {}
    for line in step_lines(out):
        title, _, rest = line.removeprefix("==> ").rpartition(": ")
        if title:
            found[title] = rest.rsplit(" (", 1)[0]
    return found


def given_images(project: Any) -> tuple[str, ...]:
    """--image-uri STUDY=URI for every study of the checkout: no image to build or find."""
    args: list[str] = []
    for info in catalog.discover(project.studies):
        args += ["--image-uri", f"{info.name}=example.com/{info.name}:1"]
    return tuple(args)


def task_definition(deployer: Any, family: str) -> dict[str, Any]:
    return dict(
        deployer.client("ecs").describe_task_definition(taskDefinition=family)["taskDefinition"]
    )


def assert_uploaded(deployer: Any, *, bucket: str) -> dict[str, Any]:
    """dags/ (every study's files), requirements-mwaa.txt and plugins.zip in the MWAA bucket,
    and nothing else."""
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
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    # Every study's bundle: its definition, study.yaml and its other files (scripts/ ...).
    for info in catalog.discover(project.studies):
        for path in info.folder.rglob("*"):
            if path.is_file():
                assert f"dags/{path.relative_to(project.dags).as_posix()}" in keys, path
    # MWAA gets requirements-mwaa.txt only; the local lock is never uploaded.
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


def lifecycle_patterns(deployer: Any, prefix: str) -> list[list[str]]:
    """The tag patterns of the image repository's lifecycle rules, in priority order, as the
    image stack got them (moto's repository ignores LifecyclePolicy; tests/cloudformation
    holds the template to using the parameter)."""
    (stack,) = deployer.client("cloudformation").describe_stacks(StackName=f"{prefix}-image")[
        "Stacks"
    ]
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in stack["Parameters"]}
    text = parameters["LifecyclePolicyText"]
    rules = sorted(json.loads(text)["rules"], key=lambda rule: rule["rulePriority"])
    return [rule["selection"]["tagPatternList"] for rule in rules]


def assert_study_stack(
    deployer: Any, prefix: str, name: str, *, cpu: int, memory: int, results: str
) -> None:
    """The study's task definition: family <prefix>-study-<name>, the study's size, its own
    role and log stream prefix; its role reads and writes only its study's results prefix.
    Its stack's name has '-' for the name's '_' (a stack name takes no '_'); the family and
    the role keep the study's name, which the DAGs run."""
    family = f"{prefix}-study-{name}"
    stack = f"{prefix}-study-{name.replace('_', '-')}"
    assert deployer.outputs(stack)["TaskDefinitionFamily"] == family
    definition = task_definition(deployer, family)
    (container,) = definition["containerDefinitions"]
    assert (container["name"], container["cpu"], container["memory"]) == ("task", cpu, memory)
    assert container["logConfiguration"]["options"]["awslogs-stream-prefix"] == name
    # moto's CloudFormation leaves TaskRoleArn out of the task definition: the stack's output.
    assert deployer.outputs(stack)["TaskRoleArn"].endswith(f":role/{family}")
    role = deployer.client("iam").get_role_policy(
        RoleName=family, PolicyName="results-own-prefix-only"
    )["PolicyDocument"]
    bucket = deployer.outputs(f"{prefix}-storage")["ResultsBucketName"]
    assert f"{bucket}/{results}/*" in json.dumps(role)
    described = deployer.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert {"Key": "windows-batch-compute:study", "Value": name} in described["Tags"]


def change_one_study_and_the_cluster(
    deployer: Any, prefix: str, args: tuple[str, ...], before: dict[str, Any]
) -> None:
    """A study's own size changes its stack (a new task definition revision) and nothing else
    of the studies; --max-instances changes the ECS stack."""
    settings = deployer.project.studies / "tiny" / "study.yaml"
    settings.write_text(settings.read_text().replace("memory_mib: 512", "memory_mib: 768"))
    third = deployer.deploy(*args, "--max-instances", "7")
    assert third.code == 0, third.text
    results = step_results(third.out)
    assert results[f"Stack {prefix}-ecs"] == "updated"
    assert results[f"Stack {prefix}-study-tiny"] == "updated"
    assert results[f"Stack {prefix}-study-option-pricing"] == "no changes"
    assert "dags/: 1 uploaded, 0 deleted" in third.out
    after = snapshot(deployer, prefix, ("tiny", "option-pricing"))
    for layer in ("storage", "network", "image"):
        assert after[f"{prefix}-{layer} events"] == before[f"{prefix}-{layer} events"]
    (container,) = task_definition(deployer, f"{prefix}-study-tiny")["containerDefinitions"]
    assert container["memory"] == 768
    revisions = deployer.client("ecs").list_task_definitions(
        familyPrefix=f"{prefix}-study-tiny", status="ACTIVE"
    )["taskDefinitionArns"]
    assert [arn.rsplit(":", 1)[1] for arn in revisions] == ["2"]
    group = deployer.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[after[f"{prefix}-ecs outputs"]["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 7, 0)


def test_two_studies_deploy_then_a_rerun_changes_nothing_and_a_change_updates_one_stack(
    two_studies: Any,
) -> None:
    """tiny runs on the base image, option_pricing on its own image FROM it: one build host
    builds both (base first: the moto server fails a build whose base is not in ECR, as
    `docker build` does), and each study gets its stack, task definition and role."""
    deployer = two_studies
    prefix = deployer.prefix()
    args = ("--prefix", prefix, "--skip", "mwaa")
    first = deployer.deploy(*args, "--build-image")
    assert first.code == 0, first.text
    # One line per step, each with its duration.
    steps = step_lines(first.out)
    for stack in [*LAYERS, "study-option-pricing", "study-tiny"]:
        assert any(
            re.fullmatch(rf"==> Stack {prefix}-{stack}: created \(\d+\.\d s\)", line)
            for line in steps
        ), steps
    tags = re.findall(rf"^==> Image {prefix}/images:(\S+): built \(", first.out, re.MULTILINE)
    assert [re.sub(r"-[0-9a-f]{16}$", "", tag) for tag in tags] == ["base", "option_pricing"]
    assert first.out.count("build host i-") == 2  # one host: launched, terminated
    assert deployer.running_instances() == []

    before = snapshot(deployer, prefix, ("tiny", "option-pricing"))
    storage = before[f"{prefix}-storage outputs"]
    repository_uri = before[f"{prefix}-image outputs"]["RepositoryUri"]
    base_uri, option_uri = (f"{repository_uri}:{tag}" for tag in tags)
    tiny = before[f"{prefix}-study-tiny outputs"]
    option = before[f"{prefix}-study-option-pricing outputs"]
    assert tiny["ImageUri"] == base_uri
    assert option["ImageUri"] == option_uri
    # option_pricing's image was built FROM the base image (--build-arg BASE_IMAGE).
    (image,) = deployer.client("ecr").batch_get_image(
        repositoryName=f"{prefix}/images", imageIds=[{"imageTag": tags[1]}]
    )["images"]
    assert json.loads(image["imageManifest"])["base"] == base_uri
    assert_study_stack(deployer, prefix, "tiny", cpu=1024, memory=512, results="studies/tiny")
    assert_study_stack(
        deployer,
        prefix,
        "option_pricing",
        cpu=1024,
        memory=1024,
        results="studies/option_pricing",
    )
    requirements = assert_uploaded(deployer, bucket=storage["MwaaBucketName"])
    assert f"requirements version: {requirements['VersionId']}" in first.out
    # The repository keeps the last images of each name, not of all names together.
    assert lifecycle_patterns(deployer, prefix) == [["option_pricing-*"], ["base-*"]]

    # Without --build-image the images of the same sources are found and nothing is rebuilt.
    second = deployer.deploy(*args)
    assert second.code == 0, second.text
    assert "build host i-" not in second.out
    results = step_results(second.out)
    assert results.pop("Preflight (changes nothing)") == "ok"
    assert set(results.values()) == {"no changes"}, results
    assert len(results) == len(LAYERS) + 2 + 1  # the stacks, the study stacks, the uploads
    assert second.out.count("unchanged: s3://") == 2
    assert "dags/: 0 uploaded, 0 deleted" in second.out
    assert snapshot(deployer, prefix, ("tiny", "option-pricing")) == before

    change_one_study_and_the_cluster(deployer, prefix, args, before)


def test_a_study_removed_from_dags_studies_has_its_stack_deleted_and_no_other(
    two_studies: Any,
) -> None:
    """Found by its tags: the stack of a deployment whose prefix is `<prefix>-study` (so its
    stacks are named `<prefix>-study-*` too) is not a study of this one."""
    deployer = two_studies
    prefix = deployer.prefix()
    args = ("--prefix", prefix, "--skip", "mwaa")
    tiny = ("--image-uri", "tiny=example.com/tiny:1")
    option = ("--image-uri", "option_pricing=example.com/option:1")
    first = deployer.deploy(*args, *tiny, *option)
    assert first.code == 0, first.text
    assert "build host i-" not in first.out
    neighbour = f"{prefix}-study-storage"
    deployer.client("cloudformation").create_stack(
        StackName=neighbour,
        TemplateBody=json.dumps(
            {"Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}
        ),
        Tags=[{"Key": "windows-batch-compute:deployment", "Value": f"{prefix}-study"}],
    )
    bucket = deployer.outputs(f"{prefix}-storage")["MwaaBucketName"]
    results = deployer.outputs(f"{prefix}-storage")["ResultsBucketName"]
    s3 = deployer.client("s3")
    s3.put_object(Bucket=results, Key="studies/option_pricing/runs/r1/out.csv", Body=b"1\n")

    shutil.rmtree(deployer.project.studies / "option_pricing")
    check = deployer.deploy(*args, *tiny, "--check")
    assert check.code == 0, check.text
    assert "deploy deletes this stack" in check.line(f"stack {prefix}-study-option-pricing")
    gone = deployer.deploy(*args, *tiny)
    assert gone.code == 0, gone.text
    removed = (
        f"==> Remove {prefix}-study-option-pricing (study option_pricing is no longer in "
        "dags/studies/; its results stay): deleted ("
    )
    assert removed in gone.out
    assert set(deployer.stacks(prefix)) == {
        *(f"{prefix}-{layer}" for layer in LAYERS),
        f"{prefix}-study-tiny",
        neighbour,
    }
    assert (
        deployer.client("ecs").list_task_definitions(
            familyPrefix=f"{prefix}-study-option_pricing", status="ACTIVE"
        )["taskDefinitionArns"]
        == []
    )
    # Deleting the stack deregistered its task definition: MWAA can no longer run it.
    active = deployer.client("ecs").list_task_definitions(
        familyPrefix=f"{prefix}-study-option_pricing", status="ACTIVE"
    )["taskDefinitionArns"]
    assert active == []
    # Its DAG goes from MWAA's bucket; its results stay.
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="dags/")["Contents"]}
    assert not any(key.startswith("dags/studies/option_pricing/") for key in keys)
    assert s3.get_object(Bucket=results, Key="studies/option_pricing/runs/r1/out.csv")
    again = deployer.deploy(*args, *tiny)
    assert again.code == 0, again.text
    assert "==> Remove" not in again.out


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


def test_a_deploy_without_its_images_is_refused_before_any_stack(two_studies: Any) -> None:
    deployer = two_studies
    prefix = deployer.prefix()
    result = deployer.deploy("--prefix", prefix)
    assert result.code == 1, result.text
    for name, folder in (("base", "docker/base/"), ("option_pricing", "docker/option_pricing/")):
        row = result.line(f"image {name}")
        assert "BLOCKER" in row.split(), row
        assert f"built from the current {folder}; add --build-image" in row
    assert "--image-uri STUDY=URI" in result.out
    assert "preflight: 2 blocker(s) above; nothing was changed" in result.err
    assert deployer.stacks(prefix) == {}


def test_check_prints_the_preflight_as_a_table_with_every_study_and_changes_nothing(
    two_studies: Any,
) -> None:
    deployer = two_studies
    prefix = deployer.prefix()
    args = ("--prefix", prefix, *given_images(deployer.project), "--check")
    fits = deployer.deploy(*args)
    assert fits.code == 0, fits.text
    lines = fits.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["check", "state", "detail"])
    # A header, a rule under each column, then one row per finding, columns aligned.
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    state_column = lines[header].index("state")
    rows = lines[header + 2 :]
    for check in ("credentials", f"region {deployer.aws().region}", "Windows Server 2022 ECS AMI"):
        row = fits.line(check)
        assert row in rows
        assert row[state_column:].startswith("ok "), row
    # Each study: its size, its tasks per instance on every type, its DAG, image and prefix.
    # c5.xlarge: 8192 MiB x 95 % - 2048 reserved = 5734 MiB and 4096 CPU units registered.
    tiny = fits.line("study tiny")
    assert tiny[state_column:].startswith("ok "), tiny
    assert "1024 CPU units, 512 MiB a task: c5.xlarge 4, c5a.xlarge 4" in tiny
    assert "DAG tiny, image example.com/tiny:1 (--image-uri), results under studies/tiny/" in tiny
    option = fits.line("study option_pricing")
    assert "1024 CPU units, 1024 MiB a task:" in option
    assert "DAG option-pricing" in option
    for name in ("tiny", "option-pricing"):
        assert "not created yet" in fits.line(f"stack {prefix}-study-{name}")
    assert "64 vCPUs (L-1216C47A) >= 40 needed (10 x c5.xlarge On-Demand)" in fits.out
    assert f"stack {prefix}-storage" in fits.out
    assert "==> Preflight (changes nothing): ok" in fits.out
    too_many = deployer.deploy(*args, "--max-instances", "20")
    assert too_many.code == 1
    assert "64 vCPUs (L-1216C47A) < 80 needed" in too_many.line("vCPU quota")
    assert "==> Preflight (changes nothing): 1 blocker(s)" in too_many.out
    assert deployer.stacks(prefix) == {}


def test_a_study_whose_task_fits_one_instance_type_not_is_refused_naming_both_sizes(
    two_studies: Any,
) -> None:
    """The group may launch any type of the list, and ECS would never place the task on the
    smaller one: the engine's rule (capacity.check_fits), refused before anything is made."""
    deployer = two_studies
    prefix = deployer.prefix()
    settings = deployer.project.studies / "tiny" / "study.yaml"
    settings.write_text(settings.read_text().replace("memory_mib: 512", "memory_mib: 6000"))
    args = ("--prefix", prefix, *given_images(deployer.project), "--check")
    refused = deployer.deploy(*args, "--instance-types", "m5.xlarge,c5.xlarge")
    assert refused.code == 1
    row = refused.line("study tiny")
    assert "BLOCKER" in row.split()
    assert (
        "study tiny: a task asks for 1024 CPU units and 6000 MiB, but a c5.xlarge registers "
        "4096 CPU units and about 5734 MiB for tasks (4 vCPUs, 8192 MiB, 2048 MiB reserved)"
    ) in row
    assert "lower cpu or memory_mib in tiny/study.yaml or choose larger --instance-types" in row
    assert " ok " in refused.line("study option_pricing")
    # On m5.xlarge alone it fits: 16384 MiB x 95 % - 2048 = 13516 MiB, two tasks of 6000.
    fits = deployer.deploy(*args, "--instance-types", "m5.xlarge")
    assert fits.code == 0, fits.text
    assert "m5.xlarge 2 tasks per instance -> 2" in fits.line("study tiny")


def test_image_uri_names_its_study_and_a_bare_uri_serves_a_single_study(
    two_studies: Any, one_study: Any
) -> None:
    prefix = two_studies.prefix()
    bare = two_studies.deploy("--prefix", prefix, "--image-uri", "example.com/x:1", "--check")
    assert bare.code == 1
    assert (
        "--image-uri example.com/x:1 names no study and dags/studies/ has 2 (option_pricing, "
        "tiny); give --image-uri STUDY=URI for each study it is for"
    ) in bare.err
    unknown = two_studies.deploy("--prefix", prefix, "--image-uri", "bogus=example.com/x:1")
    assert unknown.code == 1
    assert "there is no study bogus in dags/studies/ (studies: option_pricing, tiny)" in unknown.err
    twice = two_studies.deploy(
        "--prefix", prefix, "--image-uri", "tiny=a/b:1", "--image-uri", "tiny=a/b:2"
    )
    assert "--image-uri gives study tiny twice" in twice.err
    assert two_studies.stacks(prefix) == {}

    # One study: the bare form, as before the studies; no build, no image stack image needed.
    single = one_study.prefix()
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/other/image:7"
    result = one_study.deploy("--prefix", single, "--skip", "mwaa", "--image-uri", uri)
    assert result.code == 0, result.text
    assert f"image {uri} (--image-uri)" in result.line("study tiny")
    assert "image base" not in result.out
    assert one_study.outputs(f"{single}-study-tiny")["ImageUri"] == uri
    assert "build host i-" not in result.out


def test_a_study_yaml_image_uri_is_run_as_it_is(two_studies: Any) -> None:
    deployer = two_studies
    prefix = deployer.prefix()
    settings = deployer.project.studies / "option_pricing" / "study.yaml"
    uri = "public.ecr.aws/example/option-pricing:3"
    settings.write_text(settings.read_text() + f"image: {uri}\n")
    result = deployer.deploy("--prefix", prefix, "--check")
    assert result.code == 1  # tiny's base image is not built
    assert f"image {uri} (study.yaml image)" in result.line("study option_pricing")
    assert "image option_pricing" not in result.out
    assert "BLOCKER" in result.line("image base").split()


def test_a_region_without_mwaa_is_refused_with_the_regions_that_work(one_study: Any) -> None:
    deployer = one_study
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
    """--check resolves the capacity options; a study's tasks per instance are the minimum over
    the types (95 % of nominal memory minus 2048 MiB reserved; the BER study's task takes
    1536 MiB and 1024 CPU units)."""
    prefix = deployer.prefix()
    check = ("--prefix", prefix, *given_images(deployer.project), "--check")
    spot = deployer.deploy(
        *check, "--spot", "--on-demand-base", "1", "--instance-types", "m5.xlarge,c5.xlarge"
    )
    assert spot.code == 0, spot.text
    line = spot.line("instance types")
    assert "spot above 1 on-demand: m5.xlarge 4 vCPUs 16384 MiB, c5.xlarge 4 vCPUs 8192 MiB" in line
    # m5.xlarge 16384 MiB -> 13516 registered: 8 by memory, 4 by CPU; c5.xlarge 8192 -> 3.
    assert "m5.xlarge 4, c5.xlarge 3 tasks per instance -> 3" in spot.line("study bersim")
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
    assert "spot above 2 on-demand: c6i.xlarge 4 vCPUs" in kept.line("instance types")
    assert "c6i.xlarge 3, c5a.xlarge 3 tasks per instance -> 3" in kept.line("study bersim")
    switched = deployer.deploy(*check, "--on-demand")
    assert "on-demand: c6i.xlarge 4 vCPUs 8192 MiB, c5a.xlarge" in switched.line("instance types")


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
            "LogGroupName",
            "PurchaseOption",
            "OnDemandBaseCapacity",
            "ReservedMemoryInMiB",
            "TaskExecutionRoleArn",
        ]
    }
    ecs_outputs["InstanceTypes"] = "c5.xlarge,m5.xlarge"
    ecs_outputs |= {"WarmPoolSize": "3", "RootVolumeSizeInGiB": "120"}
    stacks._outputs[f"{prefix}-ecs"] = ecs_outputs
    stacks._outputs[f"{prefix}-network"] = {"MwaaSecurityGroupId": "sg-1"}
    passed: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(
        stacks, "deploy", lambda layer, parameters, **_: passed.setdefault(layer, parameters)
    )
    capacity = Capacity(("c5.xlarge",), "on-demand", 0, 10)
    plan = Plan(
        options=DeployOptions(prefix=prefix),
        capacity=capacity,
        baking=True,
        run="r",
        studies=studies_module.resolve(deployer.project, repository="r", image_uris=()),
    )
    deploy_module.deploy_mwaa(
        ctx,
        stacks,
        plan,
        types=InstanceTypes(ctx.aws.client("ec2")),
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
    assert parameters["ReservedMemoryInMiB"] == "<ReservedMemoryInMiB>"
    # The studies' families and roles are <prefix>-study-<name>; the DAGs size each study
    # from the types' sizes as EC2 describes them (DescribeInstanceTypes).
    assert parameters["TaskFamilyPrefix"] == f"{prefix}-study-"
    assert parameters["InstanceSizes"] == "c5.xlarge=4/8192,m5.xlarge=4/16384"
    assert re.fullmatch(declared["InstanceSizes"]["AllowedPattern"], parameters["InstanceSizes"])
    assert (parameters["InstanceBootSeconds"], parameters["ImagePullSeconds"]) == ("315", "0")
    assert parameters["PluginsS3ObjectVersion"] == "v2"
    # The DAGs report and price the ECS stack's warm pool (windows_batch.warm_pool_size).
    assert (parameters["WarmPoolSize"], parameters["RootVolumeSizeInGiB"]) == ("3", "120")
    assert parameters["RequirementsS3ObjectVersion"] == "v1"


def test_the_next_steps_name_the_airflow_ui_and_the_rest_api_calls(deployer: Any) -> None:
    """moto's server does not route MWAA: its GetEnvironment answer is canned."""
    ctx = deployer.context("wbn")
    plan = deploy_module.resolve_plan(ctx, Stacks(ctx), DeployOptions(prefix="wbn"))
    mwaa = ctx.aws.client("mwaa")
    with Stubber(mwaa) as stub:
        stub.add_response(
            "get_environment",
            {"Environment": {"Name": "wbn-mwaa", "WebserverUrl": "abc.airflow.amazonaws.com"}},
            {"Name": "wbn-mwaa"},
        )
        deploy_module.print_next_steps(ctx, plan, environment="wbn-mwaa")
    out = ctx.console.out.getvalue()
    assert "Airflow UI: https://abc.airflow.amazonaws.com" in out
    assert "--name wbn-mwaa --method POST" in out
    dag_ids = [info.dag_id for info in catalog.discover(deployer.project.studies)]
    assert f"unpause its DAG ({', '.join(dag_ids)})" in out
    assert f"--path /dags/{dag_ids[0]}/dagRuns" in out
