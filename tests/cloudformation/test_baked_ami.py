"""The baked AMI (cloudformation/ami.yaml) and the ECS stack's switch to it, from the templates.

moto has no EC2 Image Builder and no EC2 Fast Launch: the deploy test (tests/deployer/test_ami.py,
--bake-ami) runs the deployer against the moto server's simulation of them; here the templates
are held to the documented rules the simulation cannot check.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import decode_str

from deployer import cli
from deployer import plan as plan_module

from ..conftest import load_module

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "cloudformation"
DEPLOY = REPO / "deploy.sh"
# EnableFastLaunch (EC2 API reference): MaxParallelLaunches "Value must be 6 or greater".
FAST_LAUNCH_MIN_PARALLEL_LAUNCHES = 6
# EC2 User Guide, EC2 Fast Launch prerequisites: "The default quota for Max parallel launches
# across all AMIs in an AWS account is 40 per Region".
FAST_LAUNCH_PARALLEL_QUOTA = 40
# AWS::ImageBuilder::DistributionConfiguration FastLaunchSnapshotConfiguration: 1 to 10000.
TARGET_RESOURCE_COUNT_RANGE = (1, 10000)
# AWS's two managed policies for an Image Builder build instance (Image Builder User Guide).
IMAGE_BUILDER_INSTANCE_POLICIES = {
    "AmazonSSMManagedInstanceCore",
    "EC2InstanceProfileForImageBuilder",
}
ECR_PULL_ACTIONS = {
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
}


def load(layer: str) -> dict[str, Any]:
    template, matches = decode_str((TEMPLATES / f"{layer}.yaml").read_text())
    assert not matches, matches
    return template


@pytest.fixture(scope="module")
def ami() -> dict[str, Any]:
    return load("ami")


@pytest.fixture(scope="module")
def ecs() -> dict[str, Any]:
    return load("ecs")


def resource(template: dict[str, Any], resource_type: str) -> dict[str, Any]:
    (found,) = [r for r in template["Resources"].values() if r["Type"] == resource_type]
    return found["Properties"]


def sub_text(value: Any) -> str:
    """The template string of a !Sub (either form)."""
    sub = value["Fn::Sub"]
    return sub if isinstance(sub, str) else sub[0]


def references(value: Any) -> set[str]:
    """Parameter and resource names a property uses (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref":
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else item.split(".")[0])
            elif key == "Fn::Sub":
                found |= {
                    name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", sub_text(value))
                }
                found |= references(item[1] if isinstance(item, list) else {})
            else:
                found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def create_only_properties(resource_type: str) -> set[str]:
    """The properties whose change replaces the resource, from cfn-lint's copy of its schema."""
    import cfnlint

    schemas = Path(cfnlint.__file__).parent / "data" / "schemas"
    providers = json.loads((schemas / "providers" / "us-east-1.json").read_text())
    schema = json.loads((schemas / "resources" / f"{providers[resource_type]}.json").read_text())
    return {path.split("/")[2] for path in schema.get("createOnlyProperties", [])}


def test_the_recipe_bakes_on_the_ami_the_ecs_stack_launches_otherwise(
    ami: dict[str, Any], ecs: dict[str, Any]
) -> None:
    assert resource(ami, "AWS::ImageBuilder::ImageRecipe")["ParentImage"] == {"Ref": "ParentAmiId"}
    parent, public = ami["Parameters"]["ParentAmiId"], ecs["Parameters"]["AmiId"]
    assert (parent["Type"], parent["Default"]) == (public["Type"], public["Default"])
    assert parent["Default"].startswith("/aws/service/ami-windows-latest/Windows_Server-2022-")


def test_the_component_pulls_every_image_the_study_task_definitions_run(
    ami: dict[str, Any],
) -> None:
    """The deployer passes each study stack's ImageUri (and the base image) as ImageUris; the
    component logs in to each ECR registry among them, pulls each, and checks each is cached."""
    study = load("study")
    (container,) = resource(study, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    assert container["Image"] == {"Ref": "ImageUri"}
    uris = ami["Parameters"]["ImageUris"]
    # The list reaches PowerShell inside single quotes: no quote, space or ';' can get in.
    pattern = uris["AllowedPattern"]
    assert re.fullmatch(pattern, "123456789012.dkr.ecr.us-east-1.amazonaws.com/p/images:base-1")
    assert re.fullmatch(pattern, "a.example/x:1,public.ecr.aws/y/z@sha256:ab")
    for bad in ("x'; rm", "a b", "x,", ""):
        assert not re.fullmatch(pattern, bad), bad
    component = resource(ami, "AWS::ImageBuilder::Component")
    assert component["Platform"] == "Windows"
    data = sub_text(component["Data"])
    # AWSTOE reads {{ ... }} as its own variables; the document has none.
    assert "{{" not in data
    document = yaml.safe_load(data)
    assert document["schemaVersion"] == 1.0
    phases = {phase["name"]: phase["steps"] for phase in document["phases"]}
    assert set(phases) <= {"build", "validate", "test"}

    def commands(phase: str) -> list[str]:
        return [c for step in phases[phase] for c in step["inputs"]["commands"]]

    assert all(step["action"] == "ExecutePowerShell" for steps in phases.values() for step in steps)
    build = commands("build")
    assert build[2] == "$uris = '${ImageUris}'.Split(',')"
    login = next(i for i, c in enumerate(build) if "docker login" in c)
    pull = next(i for i, c in enumerate(build) if "docker pull $uri" in c)
    assert login < pull
    assert "Get-ECRAuthorizationToken" in build[login]
    assert "throw" in build[login]
    assert "foreach ($uri in $uris)" in build[pull]
    assert "$LASTEXITCODE -ne 0) { throw" in build[pull]
    (validate,) = commands("validate")
    assert "foreach ($uri in '${ImageUris}'.Split(','))" in validate
    assert "docker image inspect $uri" in validate
    assert "throw" in validate


def test_fast_launch_meets_ec2s_rules(ami: dict[str, Any]) -> None:
    parameters = ami["Parameters"]
    (distribution,) = resource(ami, "AWS::ImageBuilder::DistributionConfiguration")["Distributions"]
    assert distribution["Region"] == {"Ref": "AWS::Region"}
    (fast_launch,) = distribution["FastLaunchConfigurations"]
    assert fast_launch["Enabled"] is True
    parallel = parameters[fast_launch["MaxParallelLaunches"]["Ref"]]
    assert parallel["MinValue"] >= FAST_LAUNCH_MIN_PARALLEL_LAUNCHES
    assert FAST_LAUNCH_MIN_PARALLEL_LAUNCHES <= parallel["Default"] <= FAST_LAUNCH_PARALLEL_QUOTA
    assert parallel["MaxValue"] <= FAST_LAUNCH_PARALLEL_QUOTA
    count = parameters[fast_launch["SnapshotConfiguration"]["TargetResourceCount"]["Ref"]]
    low, high = TARGET_RESOURCE_COUNT_RANGE
    assert low <= count["MinValue"] <= count["Default"] <= count["MaxValue"] <= high
    # A non-default VPC and IMDSv2 need a launch template (EC2 Fast Launch prerequisites).
    template_name = fast_launch["LaunchTemplate"]["LaunchTemplateId"]["Ref"]
    assert fast_launch["LaunchTemplate"]["LaunchTemplateVersion"] == {
        "Fn::GetAtt": [template_name, "LatestVersionNumber"]
    }
    data = ami["Resources"][template_name]["Properties"]["LaunchTemplateData"]
    (interface,) = data["NetworkInterfaces"]
    assert interface["SubnetId"] == {"Ref": "SubnetId"}
    assert interface["Groups"] == [{"Ref": "SecurityGroupId"}]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    # The owner's own AMI: only the owner may enable Fast Launch for it.
    assert fast_launch["AccountId"] == {"Ref": "AWS::AccountId"}


def test_a_new_set_of_images_makes_a_new_image_and_the_same_set_changes_nothing(
    ami: dict[str, Any],
) -> None:
    """Image Builder versions are immutable: a resource whose create-only properties follow the
    images must carry the bake tag in its name, or its replacement would collide with itself."""
    image_inputs = {"BakeTag", "ImageUris", "ParentAmiId"}
    for name, spec in ami["Resources"].items():
        if not spec["Type"].startswith("AWS::ImageBuilder::"):
            continue
        properties = spec["Properties"]
        create_only = create_only_properties(spec["Type"]) & set(properties)
        used = set().union(*(references(properties[p]) for p in create_only))
        if used & image_inputs and "Name" in properties:
            assert "BakeTag" in references(properties["Name"]), name
    image = resource(ami, "AWS::ImageBuilder::Image")
    assert image["ImageRecipeArn"] == {"Fn::GetAtt": ["Recipe", "Arn"]}
    assert "ImageRecipeArn" in create_only_properties("AWS::ImageBuilder::Image")
    # Nothing else in the stack changes with time: the same parameters give the same template.
    text = (TEMPLATES / "ami.yaml").read_text()
    assert "AWS::NoValue" not in text
    assert "Timestamp" not in text


def resolve(value: Any, template: dict[str, Any], parameters: dict[str, str]) -> Any:
    """Ref, Fn::If, Fn::Not and Fn::Equals as CloudFormation evaluates them."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, argument),) = value.items()
        if key == "Ref":
            spec = template["Parameters"][argument]
            return parameters.get(argument, spec.get("Default"))
        if key == "Fn::If":
            condition, when_true, when_false = argument
            chosen = resolve(template["Conditions"][condition], template, parameters)
            return resolve(when_true if chosen else when_false, template, parameters)
        if key == "Fn::Not":
            return not resolve(argument[0], template, parameters)
        if key == "Fn::Equals":
            return resolve(argument[0], template, parameters) == resolve(
                argument[1], template, parameters
            )
    return value


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        pytest.param({"BakedAmiId": "ami-0123456789abcdef0"}, "ami-0123456789abcdef0", id="baked"),
        pytest.param(
            {},
            "/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-ECS_Optimized/image_id",
            id="public",
        ),
    ],
)
def test_the_launch_template_uses_the_baked_ami_when_given(
    ecs: dict[str, Any], parameters: dict[str, str], expected: str
) -> None:
    data = resource(ecs, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert resolve(data["ImageId"], ecs, parameters) == expected
    assert resolve(ecs["Outputs"]["InstanceAmiId"]["Value"], ecs, parameters) == expected
    assert ecs["Parameters"]["BakedAmiId"]["Default"] == ""
    assert re.fullmatch(ecs["Parameters"]["BakedAmiId"]["AllowedPattern"], "ami-0123456789abcdef0")


def test_the_baked_volume_fits_the_instances_root_volume(
    ami: dict[str, Any], ecs: dict[str, Any]
) -> None:
    """A volume cannot be smaller than the snapshot it is created from."""
    (mapping,) = resource(ami, "AWS::ImageBuilder::ImageRecipe")["BlockDeviceMappings"]
    assert mapping["DeviceName"] == "/dev/sda1"
    assert mapping["Ebs"]["Encrypted"] is True
    baked = ami["Parameters"][mapping["Ebs"]["VolumeSize"]["Ref"]]["Default"]
    assert baked <= ecs["Parameters"]["RootVolumeSizeInGiB"]["Default"]


def test_the_build_instance_has_least_privilege_and_goes_away(ami: dict[str, Any]) -> None:
    (role,) = [r["Properties"] for r in ami["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}
    managed = {sub_text(arn).rsplit("/", 1)[1] for arn in role["ManagedPolicyArns"]}
    assert managed == IMAGE_BUILDER_INSTANCE_POLICIES
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    actions: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        granted = (
            {statement["Action"]}
            if isinstance(statement["Action"], str)
            else set(statement["Action"])
        )
        actions |= granted
        assert not any("*" in action for action in granted)
        if statement["Resource"] == "*":
            # No resource-level permission exists for the registry login token.
            assert granted == {"ecr:GetAuthorizationToken"}
        else:
            # Any repository of this account in this Region: a study's given image may live in
            # another one (the ECS instance role pulls from any).
            assert sub_text(statement["Resource"]) == (
                "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*"
            )
    assert actions == ECR_PULL_ACTIONS | {"ecr:GetAuthorizationToken"}
    infrastructure = resource(ami, "AWS::ImageBuilder::InfrastructureConfiguration")
    assert infrastructure["TerminateInstanceOnFailure"] is True
    assert infrastructure["SubnetId"] == {"Ref": "SubnetId"}
    assert infrastructure["SecurityGroupIds"] == [{"Ref": "SecurityGroupId"}]
    assert infrastructure["InstanceMetadataOptions"]["HttpTokens"] == "required"
    assert "KeyPair" not in infrastructure


def test_the_estimate_gets_the_baked_boot_and_pull_times() -> None:
    """mwaa.yaml carries them to cost.py; the deployer passes the baked ones; all agree."""
    cost = load_module("baked_ami_cost", REPO / "dags" / "windows_batch" / "cost.py")
    bench = load_module("baked_ami_bench_cost", REPO / "benchmarks" / "bench_cost.py")
    defaults = cost.load_cost_settings({}, backend="ecs")
    assert float(plan_module.PUBLIC_AMI_BOOT_S) == defaults.boot_s
    assert float(plan_module.PUBLIC_AMI_PULL_S) == defaults.pull_s
    mwaa = load("mwaa")
    assert float(mwaa["Parameters"]["InstanceBootSeconds"]["Default"]) == defaults.boot_s
    assert float(mwaa["Parameters"]["ImagePullSeconds"]["Default"]) == defaults.pull_s
    # Fast Launch: "up to 65 % faster" (EC2 User Guide), the benchmark's assumption too.
    assert round(defaults.boot_s * bench.FAST_LAUNCH_BOOT) == plan_module.BAKED_AMI_BOOT_S
    assert plan_module.BAKED_AMI_PULL_S == 0
    options = mwaa["Resources"]["Environment"]["Properties"]["AirflowConfigurationOptions"]
    assert options["windows_batch.boot_s"] == {"Ref": "InstanceBootSeconds"}
    assert options["windows_batch.pull_s"] == {"Ref": "ImagePullSeconds"}
    # MWAA hands windows_batch.<key> to Airflow as AIRFLOW__WINDOWS_BATCH__<KEY>.
    baked = cost.load_cost_settings(
        {
            "AIRFLOW__WINDOWS_BATCH__BOOT_S": str(plan_module.BAKED_AMI_BOOT_S),
            "AIRFLOW__WINDOWS_BATCH__PULL_S": str(plan_module.BAKED_AMI_PULL_S),
        },
        backend="ecs",
    )
    assert (baked.boot_s, baked.pull_s) == (315, 0)


def test_help_names_the_baked_ami_and_it_takes_given_images() -> None:
    shown = subprocess.run(
        ["/bin/bash", str(DEPLOY), "--help"], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0
    assert "--bake-ami" in shown.stdout
    assert "--no-bake-ami" in shown.stdout
    # --image-uri and --bake-ami no longer exclude each other: the given image is baked too.
    options = cli.parse_deploy(["--bake-ami", "--image-uri", "tiny=example.com/b:1"])
    assert options is not None
    assert (options.bake_ami, options.image_uris) == (True, ("tiny=example.com/b:1",))
