"""The CloudFormation templates: deployed into moto where moto models the resource, read otherwise.

moto 5.2.5's CloudFormation creates S3 buckets (encryption only), IAM roles and their policies,
the VPC pieces, ECR, the ECS cluster and task definition (family and container definitions only),
the launch template, the Auto Scaling group, log groups and SSM documents. It skips
AWS::S3::BucketPolicy, AWS::EC2::SecurityGroupEgress and AWS::MWAA::Environment, and ignores
bucket public access blocks, versioning and lifecycle rules, cluster settings and task role ARNs:
those are asserted on the template itself.
"""

from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path
from typing import Any

import boto3
import moto_server  # loaded by tests/conftest.py
import pytest
from cfnlint.decode import decode_str
from moto import mock_aws

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "cloudformation"
REGION = "us-east-1"
LAYERS = ("storage", "network", "image", "ami", "ecs", "mwaa")


def load(layer: str) -> dict[str, Any]:
    template, matches = decode_str((TEMPLATES / f"{layer}.yaml").read_text())
    assert not matches, matches
    return template


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    return {item["OutputKey"]: item["OutputValue"] for item in described.get("Outputs", [])}


def create_stack(cloudformation: Any, layer: str, stack: str, **parameters: str) -> dict[str, str]:
    # CloudFormation refuses a parameter the template does not declare ("Parameters: [X] do
    # not exist in the template"); moto ignores it.
    declared = load(layer).get("Parameters", {})
    unknown = sorted(set(parameters) - set(declared))
    assert not unknown, f"Parameters: {unknown} do not exist in {layer}.yaml"
    cloudformation.create_stack(
        StackName=stack,
        TemplateBody=(TEMPLATES / f"{layer}.yaml").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    status = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    assert status == "CREATE_COMPLETE"
    return outputs(cloudformation, stack)


def group_launch_template_id(group: dict[str, Any]) -> str:
    """The launch template of a group with a mixed-instances policy (ecs.yaml's)."""
    policy = group["MixedInstancesPolicy"]["LaunchTemplate"]
    return str(policy["LaunchTemplateSpecification"]["LaunchTemplateId"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        moto_server.seed_windows_ami(REGION)
        yield boto3.client("cloudformation", region_name=REGION)


# --- Every template -----------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_every_parameter_is_described_grouped_and_every_output_exported(layer: str) -> None:
    template = load(layer)
    assert template["Description"].startswith("windows-batch-compute ")
    grouped = {
        name
        for group in template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        for name in group["Parameters"]
    }
    assert grouped == set(template["Parameters"])
    for name, parameter in template["Parameters"].items():
        assert parameter.get("Description"), name
    for name, output in template["Outputs"].items():
        assert output.get("Description"), name
        assert output["Export"]["Name"] == {"Fn::Sub": f"${{AWS::StackName}}-{name}"}


@pytest.mark.parametrize("layer", LAYERS)
def test_checkov_skips_carry_a_reason(layer: str) -> None:
    for name, resource in load(layer)["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV"), name
            assert len(skip["comment"]) > 20, (name, skip)


# --- Storage ------------------------------------------------------------------------------------


def test_buckets_block_public_access_encrypt_and_deny_plain_http() -> None:
    template = load("storage")
    buckets = resources_of_type(template, "AWS::S3::Bucket")
    assert set(buckets) == {"ResultsBucket", "MwaaBucket", "AccessLogsBucket"}
    policies = {
        policy["Properties"]["Bucket"]["Ref"]: policy["Properties"]["PolicyDocument"]
        for policy in resources_of_type(template, "AWS::S3::BucketPolicy").values()
    }
    for name, bucket in buckets.items():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        deny = [s for s in policies[name]["Statement"] if s["Effect"] == "Deny"]
        assert deny == [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [
                    {"Fn::GetAtt": [name, "Arn"]},
                    {"Fn::Sub": f"${{{name}.Arn}}/*"},
                ],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
        if name != "AccessLogsBucket":
            assert properties["LoggingConfiguration"]["DestinationBucketName"] == {
                "Ref": "AccessLogsBucket"
            }


def test_mwaa_bucket_is_versioned() -> None:
    buckets = resources_of_type(load("storage"), "AWS::S3::Bucket")
    assert buckets["MwaaBucket"]["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}


def test_storage_stack_creates_encrypted_buckets_in_moto(aws: Any) -> None:
    created = create_stack(aws, "storage", "t-storage", TaskResultsExpirationInDays="7")
    s3 = boto3.client("s3", region_name=REGION)
    names = {
        created[key] for key in ("ResultsBucketName", "MwaaBucketName", "AccessLogsBucketName")
    }
    assert names <= {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    for name in names:
        encryption = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
        assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == (
            "AES256"
        )
    assert created["MwaaBucketArn"] == f"arn:aws:s3:::{created['MwaaBucketName']}"


# --- Network ------------------------------------------------------------------------------------


def test_network_stack_has_two_private_subnets_in_two_azs(aws: Any) -> None:
    created = create_stack(aws, "network", "t-network")
    ec2 = boto3.client("ec2", region_name=REGION)
    subnets = ec2.describe_subnets(SubnetIds=created["PrivateSubnetIds"].split(","))["Subnets"]
    assert len({subnet["AvailabilityZone"] for subnet in subnets}) == 2
    assert not any(subnet["MapPublicIpOnLaunch"] for subnet in subnets)
    assert len(ec2.describe_nat_gateways()["NatGateways"]) == 1
    groups = ec2.describe_security_groups(GroupIds=[created["EcsInstanceSecurityGroupId"]])
    assert groups["SecurityGroups"][0]["IpPermissions"] == []


def test_rdp_only_with_a_cidr_and_mwaa_group_references_itself() -> None:
    template = load("network")
    assert template["Conditions"]["HasRdpCidr"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "RdpCidr"}, ""]}]
    }
    assert template["Parameters"]["RdpCidr"]["Default"] == ""
    ingress = resources_of_type(template, "AWS::EC2::SecurityGroupIngress")
    assert ingress["EcsInstanceRdpIngress"]["Condition"] == "HasRdpCidr"
    assert ingress["EcsInstanceRdpIngress"]["Properties"]["FromPort"] == 3389
    self_rule = ingress["MwaaSecurityGroupSelfIngress"]["Properties"]
    assert (
        self_rule["GroupId"] == self_rule["SourceSecurityGroupId"] == {"Ref": "MwaaSecurityGroup"}
    )
    for group in resources_of_type(template, "AWS::EC2::SecurityGroup").values():
        assert "SecurityGroupIngress" not in group["Properties"]


# --- Image --------------------------------------------------------------------------------------


def test_image_repository_and_a_build_host_that_cannot_outlive_its_build() -> None:
    resources = load("image")["Resources"]
    repository = resources["Repository"]["Properties"]
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    # The deployer's rules (one per image name: deployer/studies.py), else ImagesToKeep of any.
    condition, given, default = repository["LifecyclePolicy"]["LifecyclePolicyText"]["Fn::If"]
    template = load("image")
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "LifecyclePolicyText"}, ""]}]
    }
    assert given == {"Ref": "LifecyclePolicyText"}
    # CloudFormation's parameter value quota (CloudFormation User Guide, quotas): 4,096 bytes.
    assert template["Parameters"]["LifecyclePolicyText"]["MaxLength"] == 4096
    rule = json.loads(default["Fn::Sub"].replace("${ImagesToKeep}", "5"))["rules"][0]
    assert rule["selection"]["countType"] == "imageCountMoreThan"
    assert rule["selection"]["countNumber"] == 5
    # No CodeBuild: its Windows environments run builds inside a container, without Docker.
    assert not resources_of_type(load("image"), "AWS::CodeBuild::Project")
    data = resources["BuilderLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    user_data = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert "shutdown.exe /s /t ((${BuildTimeoutInMinutes} + 30) * 60)" in user_data
    role = resources["BuilderRole"]["Properties"]
    assert [arn["Fn::Sub"].rsplit("/", 1)[1] for arn in role["ManagedPolicyArns"]] == [
        "AmazonSSMManagedInstanceCore"
    ]


def test_build_document_builds_the_dockerfile_and_pushes_the_tag_it_is_given() -> None:
    document = load("image")["Resources"]["BuildDocument"]["Properties"]
    assert document["DocumentType"] == "Command"
    content = document["Content"]
    step = content["mainSteps"][0]
    assert step["action"] == "aws:runPowerShellScript"
    commands = step["inputs"]["runCommand"]
    assert all(isinstance(command, str) for command in commands)
    build = next(c for c in commands if c.startswith("docker build"))
    assert "--file \"$work\\src\\Dockerfile\" --tag '{{ImageUri}}'" in build
    # A study image is built FROM the base image: its Dockerfile's ARG BASE_IMAGE.
    assert build.startswith("docker build @buildArgs ")
    assert any(
        c.startswith("if ('{{BaseImageUri}}')")
        and "@('--build-arg', 'BASE_IMAGE={{BaseImageUri}}')" in c
        for c in commands
    )
    assert content["parameters"]["BaseImageUri"]["default"] == ""
    assert re.fullmatch(content["parameters"]["BaseImageUri"]["allowedPattern"], "")
    # One host builds several images: each build moves the host's self-shutdown past its own
    # timeout, before anything else runs.
    shutdown = next(i for i, c in enumerate(commands) if c.startswith("shutdown.exe /s"))
    assert "{{TimeoutSeconds}}" in commands[shutdown]
    assert shutdown < commands.index(build)
    push = commands.index("docker push '{{ImageUri}}'")
    assert commands[push + 1].startswith("if ($LASTEXITCODE -ne 0) { throw")
    assert commands.index(build) < push
    # Every parameter the script substitutes is declared and pattern-checked.
    used = set(re.findall(r"\{\{(\w+)\}\}", json.dumps(step)))
    assert used == set(content["parameters"])
    assert all(p["allowedPattern"].startswith("^") for p in content["parameters"].values())


def test_image_stack_creates_repository_build_host_template_and_document_in_moto(
    aws: Any,
) -> None:
    network = create_stack(aws, "network", "t-network")
    created = create_stack(
        aws,
        "image",
        "t-image",
        SourceBucketName="some-bucket",
        RepositoryName="t/bersim",
        BuilderSecurityGroupId=network["EcsInstanceSecurityGroupId"],
    )
    ecr = boto3.client("ecr", region_name=REGION)
    repository = ecr.describe_repositories(repositoryNames=["t/bersim"])["repositories"][0]
    assert created["RepositoryUri"] == repository["repositoryUri"]
    ec2 = boto3.client("ec2", region_name=REGION)
    template = ec2.describe_launch_template_versions(
        LaunchTemplateId=created["BuilderLaunchTemplateId"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert template["ImageId"] == moto_server.FAKE_WINDOWS_AMI_ID
    assert template["SecurityGroupIds"] == [network["EcsInstanceSecurityGroupId"]]
    ssm = boto3.client("ssm", region_name=REGION)
    document = ssm.get_document(Name=created["BuildDocumentName"], DocumentFormat="YAML")
    assert "docker push '{{ImageUri}}'" in document["Content"]
    assert created["BuildTimeoutInMinutes"] == "90"


# --- ECS ----------------------------------------------------------------------------------------


@pytest.fixture
def ecs_stack(aws: Any) -> dict[str, str]:
    network = create_stack(aws, "network", "t-network")
    return create_stack(
        aws,
        "ecs",
        "t-ecs",
        PrivateSubnetIds=network["PrivateSubnetIds"],
        InstanceSecurityGroupId=network["EcsInstanceSecurityGroupId"],
        MaxInstances="6",
        LogRetentionInDays="14",
    )


STUDY_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/t/images:bersim-0123456789abcdef"


@pytest.fixture
def study_stack(aws: Any, ecs_stack: dict[str, str]) -> dict[str, str]:
    """The BER study's stack as the deployer creates it (its name has no '_': the family does)."""
    return create_stack(
        aws,
        "study",
        "t-study-bersim",
        StudyName="bersim",
        ImageUri=STUDY_IMAGE,
        TaskCpu="1024",
        TaskMemoryInMiB="1536",
        ResultsPrefix="sim",
        ResultsBucketName="results-bucket",
        LogGroupName=ecs_stack["LogGroupName"],
        TaskExecutionRoleArn=ecs_stack["TaskExecutionRoleArn"],
    )


def test_ecs_stack_outputs_what_the_dag_needs(ecs_stack: dict[str, str]) -> None:
    assert ecs_stack["ClusterName"] == "t-ecs-cluster"
    assert ecs_stack["AutoScalingGroupName"] == "t-ecs-instances"
    assert ecs_stack["LogGroupName"] == "/ecs/t-ecs/tasks"
    assert ecs_stack["ReservedMemoryInMiB"] == "2048"
    ecs = boto3.client("ecs", region_name=REGION)
    assert ecs.describe_clusters(clusters=["t-ecs-cluster"])["clusters"][0]["status"] == "ACTIVE"
    groups = boto3.client("logs", region_name=REGION).describe_log_groups(
        logGroupNamePrefix="/ecs/t-ecs/tasks"
    )["logGroups"]
    assert groups[0]["retentionInDays"] == 14


def test_auto_scaling_group_idles_at_zero_and_user_data_prefers_cached_images(
    ecs_stack: dict[str, str],
) -> None:
    group = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs_stack["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (0, 0, 6)
    ec2 = boto3.client("ec2", region_name=REGION)
    template_id = group_launch_template_id(group)
    data = ec2.describe_launch_template_versions(LaunchTemplateId=template_id)[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    assert data["ImageId"] == moto_server.FAKE_WINDOWS_AMI_ID
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    # A token needs one hop more than the host: containers get no instance-role credentials.
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    user_data = base64.b64decode(data["UserData"]).decode()
    pull = user_data.index('"ECS_IMAGE_PULL_BEHAVIOR", "prefer-cached", "Machine"')
    initialize = user_data.index('Initialize-ECSAgent -Cluster "t-ecs-cluster" -EnableTaskIAMRole')
    assert pull < initialize


def test_a_study_s_task_definition_container_and_logs(study_stack: dict[str, str]) -> None:
    assert study_stack["TaskDefinitionFamily"] == "t-study-bersim"
    ecs = boto3.client("ecs", region_name=REGION)
    definition = ecs.describe_task_definition(taskDefinition=study_stack["TaskDefinitionFamily"])
    container = definition["taskDefinition"]["containerDefinitions"][0]
    # The engine's one container name for every study (settings.CONTAINER_NAME).
    assert container["name"] == "task"
    assert container["image"] == STUDY_IMAGE
    assert (container["cpu"], container["memory"]) == (1024, 1536)
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "/ecs/t-ecs/tasks",
            "awslogs-region": REGION,
            "awslogs-stream-prefix": "bersim",
        },
    }


def test_a_study_s_task_role_may_only_use_its_own_prefix(study_stack: dict[str, str]) -> None:
    iam = boto3.client("iam", region_name=REGION)
    role_name = study_stack["TaskRoleArn"].rsplit("/", 1)[1]
    # Named after the family: mwaa.yaml may pass <TaskFamilyPrefix>* roles only.
    assert role_name == "t-study-bersim"
    policies = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    statements = []
    for name in policies:
        document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            # moto keeps a policy created by CloudFormation as the repr of the parsed template.
            document = ast.literal_eval(document)
        statements += document["Statement"]
    assert statements == [
        {
            "Sid": "ReadWriteOwnObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": "arn:aws:s3:::results-bucket/sim/*",
        },
        {
            "Sid": "TagTaskResults",
            "Effect": "Allow",
            "Action": "s3:PutObjectTagging",
            "Resource": "arn:aws:s3:::results-bucket/sim/*",
            "Condition": {
                "StringEquals": {"s3:RequestObjectTag/windows-batch-retention": "task-result"}
            },
        },
        {
            "Sid": "ListOwnPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::results-bucket",
            "Condition": {"StringLike": {"s3:prefix": ["sim/*"]}},
        },
    ]


def test_task_definition_is_ec2_default_network_with_both_roles() -> None:
    properties = load("study")["Resources"]["TaskDefinition"]["Properties"]
    assert properties["RequiresCompatibilities"] == ["EC2"]
    assert "NetworkMode" not in properties
    assert properties["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert properties["ExecutionRoleArn"] == {"Ref": "TaskExecutionRoleArn"}
    template = load("ecs")
    cluster = template["Resources"]["Cluster"]["Properties"]
    assert cluster["ClusterSettings"] == [{"Name": "containerInsights", "Value": "enabled"}]
    assert template["Parameters"]["AmiId"] == {
        **template["Parameters"]["AmiId"],
        "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
        "Default": moto_server.WINDOWS_AMI_PARAMETER,
    }
    managed = template["Resources"]["InstanceRole"]["Properties"]["ManagedPolicyArns"]
    assert [arn["Fn::Sub"].rsplit("/", 1)[1] for arn in managed] == [
        "AmazonEC2ContainerServiceforEC2Role",
        "AmazonSSMManagedInstanceCore",
    ]


# What a Windows container instance must be started with to advertise the capabilities each
# task definition feature needs (Amazon ECS Developer Guide: "Windows IAM roles for tasks",
# "Using the awslogs log driver", container agent configuration; amazon-ecs-agent README).
# Each entry: feature -> (machine environment variable settings, Initialize-ECSAgent flags).
AGENT_SETTINGS_FOR_FEATURE: dict[str, tuple[dict[str, str], list[str]]] = {
    # ecs.capability.task-iam-role: the credential proxy on Windows is enabled by this flag.
    "task role": ({}, ["-EnableTaskIAMRole"]),
    # com.amazonaws.ecs.capability.logging-driver.awslogs: the driver must be listed as available.
    "awslogs": ({}, ["-LoggingDrivers", "awslogs"]),
    # ecs.capability.execution-role-awslogs: Windows advertises it only with this set first.
    "awslogs with an execution role": (
        {"ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE": "true"},
        [],
    ),
}


def task_definition_features(properties: dict[str, Any]) -> set[str]:
    features = set()
    if properties.get("TaskRoleArn"):
        features.add("task role")
    for container in properties["ContainerDefinitions"]:
        if container.get("LogConfiguration", {}).get("LogDriver") == "awslogs":
            features.add("awslogs")
            if properties.get("ExecutionRoleArn"):
                features.add("awslogs with an execution role")
    return features


def test_user_data_starts_the_agent_with_every_capability_the_task_definition_needs(
    ecs_stack: dict[str, str],
) -> None:
    definitions = resources_of_type(load("study"), "AWS::ECS::TaskDefinition")
    features = set().union(
        *(task_definition_features(d["Properties"]) for d in definitions.values())
    )
    assert features == set(AGENT_SETTINGS_FOR_FEATURE)
    group = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs_stack["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    template_id = group_launch_template_id(group)
    data = boto3.client("ec2", region_name=REGION).describe_launch_template_versions(
        LaunchTemplateId=template_id
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    user_data = base64.b64decode(data["UserData"]).decode()
    initialize = next(line for line in user_data.splitlines() if "Initialize-ECSAgent" in line)
    before = user_data[: user_data.index(initialize)]
    machine = dict(re.findall(r'SetEnvironmentVariable\("(\w+)", "([^"]*)", "Machine"\)', before))
    for feature in sorted(features):
        variables, flags = AGENT_SETTINGS_FOR_FEATURE[feature]
        for name, value in variables.items():
            assert machine.get(name) == value, f"{feature}: {name}={value} before Initialize"
        for flag in flags:
            assert flag in initialize, f"{feature}: Initialize-ECSAgent needs {flag}"
