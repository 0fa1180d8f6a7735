"""A moto server that behaves like AWS where the deployer relies on it, and a way to run one.

The deployer (deployer/stacks.py) drives CloudFormation through change sets. moto 5.2.5 differs
from AWS there in three ways this module corrects, in the server process only:

- A stack name may hold only letters, digits and hyphens and start with a letter ("A stack name
  can contain only alphanumeric characters (case sensitive) and hyphens": CloudFormation API
  reference, CreateStack); moto takes any. CreateChangeSet refuses others, as AWS does.
- CreateChangeSet for an unchanged stack raises "No updates are to be performed." (UpdateStack's
  error); AWS creates a FAILED change set ("The submitted information didn't contain changes"),
  which is what `--no-fail-on-empty-changeset` handles. Unchanged parameters passed back as
  UsePreviousValue are compared after normalisation (moto keeps numbers and lists parsed), and
  an SSM-typed parameter passed back that way keeps its resolved value (moto would look the
  resolved AMI ID up as a parameter name and fail).
- A stack created or updated by executing a change set keeps its old (empty) outputs and never
  registers its exports (deleting it then fails with a KeyError). A create that fails (a resource
  CloudFormation cannot create, e.g. a repository name already taken) raises from
  ExecuteChangeSet; AWS accepts the call, records a CREATE_FAILED event for that resource (its
  logical ID, type and the service's message) and the stack ends in ROLLBACK_COMPLETE.
- `AWS::S3::Bucket` ignores `VersioningConfiguration` (the MWAA bucket must be versioned), and
  `AWS::ECR::Repository` ignores `EmptyOnDelete` (deleting the stack of a repository with images
  then fails).
- A stack's AWS::ECS::Cluster is never deleted with the stack; AWS deletes it, and refuses while
  container instances are still registered (ClusterContainsContainerInstancesException). A
  resource that cannot be deleted makes DeleteStack raise; AWS accepts the call and the stack
  ends in DELETE_FAILED.
- Deleting a stack leaves its route tables, NAT gateways, gateway endpoints, internet gateway and
  flow logs in place (their models cannot be deleted through CloudFormation), so its VPC cannot
  be deleted. Deleting the VPC here first deletes what CloudFormation would have deleted before.
- `AWS::AutoScaling::AutoScalingGroup` keeps an `AWS::NoValue` item of a list as None (AWS leaves
  it out: ecs.yaml's empty InstanceType2-4 overrides) and drops `CapacityRebalance`. A stack
  update deletes and re-creates the group, terminating its instances and losing its warm pool;
  AWS updates it in place (here too), and a new launch template version reaches only the
  instances launched from then on.
- A stack update whose parameters turn a resource's Condition false updates the resource; AWS
  deletes it (and creates one whose Condition turns true). Here it is deleted (and created).
- A stack update that touches a resource whose moto model cannot be updated (AWS::Logs::LogGroup
  when any parameter it names is passed again) loses that resource: its Ref and the outputs made
  from it are gone (ecs.yaml's LogGroupName, which the study stacks take). AWS updates it in
  place; here it is kept as it was.
- `AWS::ECS::TaskDefinition` drops TaskRoleArn and ExecutionRoleArn, registers an update's
  container definitions without turning their keys to the API's camelCase (so a changed study
  size reads back without `memory`), and is not deregistered when its stack is deleted. Here a
  create keeps the roles, an update that changes anything registers a new revision and
  deregisters the old (ContainerDefinitions, TaskRoleArn and ExecutionRoleArn are
  createOnlyProperties of the resource's CloudFormation schema: a change replaces it), and
  deleting it deregisters it, as CloudFormation does.

It also seeds the public SSM parameter of the ECS-optimized Windows Server 2022 AMI, which AWS
publishes and moto does not know, and the EC2 On-Demand Standard vCPU quota (Service Quotas
L-1216C47A; moto models only VPC quotas) as MOTO_EC2_STANDARD_VCPU_QUOTA (default 64), and the
Standard Spot vCPU quota (L-34B43A08) as MOTO_EC2_SPOT_VCPU_QUOTA (default 64).

The Windows image build host is simulated, since no Windows instance runs here: SendCommand
refuses an instance that is not running (InvalidInstanceId, as for an instance whose SSM agent
has not registered), and the build document's invocation ends as MOTO_IMAGE_BUILD_OUTCOME says:
Success (default; the image appears in ECR under the ImageUri parameter) or Failed (the output
streams in the command's CloudWatch log group end with "docker build failed"). A build whose
BaseImageUri (the Dockerfile's `FROM ${BASE_IMAGE}`) is not in ECR fails as `docker build` does
when it cannot pull its base ("failed to resolve source metadata for ...: not found"); the
pushed image's manifest records the base it was built on.

moto has no EC2 Image Builder and no EC2 Fast Launch, so the ami stack's part of AWS is simulated:
- AWS::ImageBuilder::Component, ImageRecipe, InfrastructureConfiguration and
  DistributionConfiguration are records with an Arn; AWS::ImageBuilder::Image "builds" at once:
  it registers a Windows AMI in moto's EC2, named and tagged as the distribution configuration's
  AmiDistributionConfiguration says, and answers GetAtt ImageId. A new recipe ARN replaces the
  image (a new AMI); deleting an image leaves its AMI in EC2, as Image Builder's DeleteImage
  does ("does not delete any EC2 AMIs"). moto's stack update re-creates a resource only when
  its own template or parameters changed, not when a resource it names got a new ARN (AWS
  re-resolves `!GetAtt Recipe.Arn`, and ImageRecipeArn is create-only): an image whose recipe,
  infrastructure or distribution configuration was updated is updated too, and builds a new
  AMI only when one of their ARNs differs. The same holds for an Auto Scaling group whose
  launch template was updated (`!GetAtt LaunchTemplate.LatestVersionNumber`: a new version).
- A FastLaunchConfigurations entry with Enabled enables EC2 Fast Launch for that AMI, refused
  below 6 MaxParallelLaunches as EnableFastLaunch does ("Value must be 6 or greater"), and makes
  TargetResourceCount pre-provisioned snapshots (DescribeSnapshots lists them).
- DescribeFastLaunchImages, EnableFastLaunch (new settings for an enabled AMI, the same
  6-launch minimum) and DisableFastLaunch answer for those AMIs. Disabling deletes the
  pre-provisioned snapshots (DisableFastLaunch "clean[s] up existing pre-provisioned snapshots")
  and the state stays `disabling` for one more DescribeFastLaunchImages before the AMI leaves
  the list.
EC2 Auto Scaling warm pools: moto 5.2.5 keeps PutWarmPool's settings and nothing else (no
instance ever enters the pool, DescribeWarmPool lists none, DescribeScalingActivities answers
nothing, CloudFormation knows neither AWS::AutoScaling::WarmPool nor ::LifecycleHook, and there
is no CompleteLifecycleAction). `warm_pool_patches` emulates the lifecycle the Auto Scaling user
guide describes ("Use lifecycle hooks with a warm pool in Auto Scaling group",
https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html, and
"Decrease latency for applications with long boot times using warm pools"):
- the pool holds max(MinSize, MaxGroupPreparedCapacity (default MaxSize) - desired capacity)
  instances; missing ones launch into it (Warmed:Pending; activity "Launching a new EC2
  instance into warm pool: i-..."), surplus ones are terminated (Warmed:Terminating, then
  terminated at the next step: Auto Scaling does it after the call that shrank the pool);
- with an autoscaling:EC2_INSTANCE_LAUNCHING hook an instance pauses in Warmed:Pending:Wait,
  then Warmed:Pending:Proceed, and is stopped (Warmed:Stopped; Warmed:Running or :Hibernated
  for those pool states);
- a scale-out draws warmed instances first: started, Pending (Pending:Wait with the hook), then
  InService (activity "Launching a new EC2 instance from warm pool: i-..."); what the pool
  cannot cover launches cold ("Launching a new EC2 instance: i-..."), pausing only in
  Pending:Wait; a scale-in terminates (ECS forbids ReuseOnScaleIn) and the pool refills;
- a lifecycle action is completed by CompleteLifecycleAction, or by the instance itself when
  the launch template's user data calls Complete-ASLifecycleAction for that hook (at the first
  boot; at later boots, i.e. when it leaves the pool, only with <persist>true</persist>, as
  EC2Launch runs user data), or by the hook's DefaultResult after HeartbeatTimeout;
  INSTANCE_MAY_COMPLETE lets the ECS server also require the instance role's permission;
- each instance reports the launch template version it was launched from (moto reports the
  template's default version for all), so an instance refresh can tell the old ones;
- DeleteWarmPool refuses a pool that holds instances unless ForceDelete, which marks the pool
  PendingDelete and returns: the next step terminates its instances, the one after removes it;
- each DescribeAutoScalingGroups and DescribeWarmPool takes one step of these transitions (Auto
  Scaling acts on its own clock; these calls are how a caller sees it).
EC2 Auto Scaling instance refreshes (moto 5.2.5 has none): StartInstanceRefresh decides what it
replaces when it starts (with SkipMatching, the instances whose launch template version is not
the group's; without, all), refuses a second one while one is active (InstanceRefreshInProgress)
and a MaxHealthyPercentage without a MinHealthyPercentage at most 100 below it; each
DescribeInstanceRefreshes takes one step: Pending, then InProgress replacing one instance per
step, the group's first (terminated, then a new one launched from the group's template), then
the pool's (terminated; the pool's refill launches its successor), then Successful, with
LivePoolProgress and WarmPoolProgress; CancelInstanceRefresh makes it Cancelling, then
Cancelled. DesiredConfiguration is not emulated (refused).
Only groups with a warm pool or a launch hook are emulated; the others behave as in moto.
Run as `python moto_server.py --port N`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

WINDOWS_AMI_PARAMETER = (
    "/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-ECS_Optimized/image_id"
)
FAKE_WINDOWS_AMI_ID = "ami-0a1b2c3d4e5f67890"
ACCOUNT_ID = "123456789012"


def seed_windows_ami(region: str, account_id: str = ACCOUNT_ID) -> None:
    """Put AWS's public Windows ECS AMI parameter into moto's SSM (the API refuses /aws names)."""
    from moto.core.utils import utcnow
    from moto.ssm.models import Parameter, ssm_backends

    parameters = ssm_backends[account_id][region]._parameters
    if parameters.get(WINDOWS_AMI_PARAMETER):
        return
    parameters[WINDOWS_AMI_PARAMETER].append(
        Parameter(
            account_id=account_id,
            name=WINDOWS_AMI_PARAMETER,
            value=FAKE_WINDOWS_AMI_ID,
            parameter_type="String",
            description=None,
            allowed_pattern=None,
            keyid=None,
            last_modified_date=utcnow(),
            version=1,
            data_type="aws:ec2:image",
        )
    )


def _normalise(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


BUILD_DOCUMENT_SUFFIX = "-build-windows-image"
BUILD_FAILURE_LINE = "docker build failed"


def apply_patches() -> None:
    """Make moto behave like AWS in the ways the module docstring lists."""
    _patch_change_sets()
    _patch_in_place_updates()
    _patch_task_definitions()
    _patch_bucket_versioning()
    _patch_mixed_instances_group()
    _patch_repository_empty_on_delete()
    _patch_vpc_deletion()
    _patch_cluster_deletion()
    _patch_service_quotas()
    _patch_build_host()
    _patch_image_builder()
    _patch_fast_launch()
    for target, name, value in warm_pool_patches():
        setattr(target, name, value)


def _patch_cluster_deletion() -> None:
    from moto.cloudformation.models import CloudFormationBackend
    from moto.ecs.exceptions import ECSException
    from moto.ecs.models import Cluster, EC2ContainerServiceBackend, ecs_backends

    delete_cluster = EC2ContainerServiceBackend.delete_cluster
    delete_stack = CloudFormationBackend.delete_stack

    def delete_with_the_stack(self: Any, account_id: str, region_name: str) -> None:
        ecs_backends[account_id][region_name].delete_cluster(self.name)

    def delete_or_fail(self: Any, name_or_stack_id: str) -> None:
        stacks = [
            stack
            for stack in self.stacks.values()
            if name_or_stack_id in (stack.stack_id, stack.name)
        ]
        try:
            delete_stack(self, name_or_stack_id)
        except Exception as error:
            for stack in stacks:
                self.stacks[stack.stack_id] = stack
                self.deleted_stacks.pop(stack.stack_id, None)
                stack.status = "DELETE_FAILED"
                stack._add_stack_event("DELETE_FAILED", resource_status_reason=str(error))

    def delete_only_an_empty_cluster(self: Any, cluster_str: str) -> Any:
        cluster = self._get_cluster(cluster_str)
        registered = [
            instance
            for instance in self.container_instances.get(cluster.name, {}).values()
            if instance.status in ("ACTIVE", "DRAINING")
        ]
        if registered:
            raise ECSException(
                "ClusterContainsContainerInstancesException",
                "The Cluster cannot be deleted while Container Instances are active or draining.",
            )
        return delete_cluster(self, cluster_str)

    EC2ContainerServiceBackend.delete_cluster = delete_only_an_empty_cluster  # type: ignore[method-assign]
    Cluster.delete = delete_with_the_stack  # type: ignore[attr-defined]
    CloudFormationBackend.delete_stack = delete_or_fail  # type: ignore[method-assign]


def _patch_service_quotas() -> None:
    from moto.servicequotas.models import ServiceQuotasBackend

    get_service_quota = ServiceQuotasBackend.get_service_quota

    vcpu_quotas = {
        "L-1216C47A": (
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "MOTO_EC2_STANDARD_VCPU_QUOTA",
        ),
        "L-34B43A08": (
            "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
            "MOTO_EC2_SPOT_VCPU_QUOTA",
        ),
    }

    def get_with_ec2_vcpus(self: Any, service_code: str, quota_code: str) -> dict[str, Any]:
        if service_code == "ec2" and quota_code in vcpu_quotas:
            name, variable = vcpu_quotas[quota_code]
            return {
                "ServiceCode": "ec2",
                "QuotaCode": quota_code,
                "QuotaName": name,
                "Value": float(os.environ.get(variable, "64")),
                "Unit": "None",
                "Adjustable": True,
                "GlobalQuota": False,
            }
        return get_service_quota(self, service_code, quota_code)

    ServiceQuotasBackend.get_service_quota = get_with_ec2_vcpus  # type: ignore[method-assign]


def _patch_build_host() -> None:
    from moto.ec2.models import ec2_backends
    from moto.ecr.exceptions import ImageNotFoundException, RepositoryNotFoundException
    from moto.ecr.models import ecr_backends
    from moto.logs.models import logs_backends
    from moto.ssm.exceptions import SSMException
    from moto.ssm.models import SimpleSystemManagerBackend
    from moto.ssm.responses import SimpleSystemManagerResponse

    send_command = SimpleSystemManagerBackend.send_command
    respond_to_send_command = SimpleSystemManagerResponse.send_command
    # moto's response handler drops CloudWatchOutputConfig; the backend patch needs it.
    output_config: dict[str, Any] = {}

    def keep_output_config(self: Any) -> Any:
        output_config.clear()
        output_config.update(self._get_param("CloudWatchOutputConfig") or {})
        return respond_to_send_command(self)

    def send_to_the_build_host(self: Any, **kwargs: Any) -> Any:
        ec2 = ec2_backends[self.account_id][self.region_name]
        running = {
            instance.id
            for reservation in ec2.describe_instances()
            for instance in reservation.instances
            if instance.state == "running"
        }
        unknown = set(kwargs.get("instance_ids") or []) - running
        if unknown:
            message = f"Instances {sorted(unknown)} not in a valid state"
            raise SSMException("InvalidInstanceId", message)
        command = send_command(self, **kwargs)
        if not str(kwargs.get("document_name", "")).endswith(BUILD_DOCUMENT_SUFFIX):
            return command
        image_uri = kwargs["parameters"]["ImageUri"][0]
        repository, tag = image_uri.split("/", 1)[1].rsplit(":", 1)
        base = (kwargs["parameters"].get("BaseImageUri") or [""])[0]
        outcome = os.environ.get("MOTO_IMAGE_BUILD_OUTCOME", "Success")
        failure = [BUILD_FAILURE_LINE]
        if outcome == "Success" and base and not _image_in_ecr(self, base):
            outcome = "Failed"
            failure = [f"failed to resolve source metadata for {base}: not found", *failure]
        for invocation in command.invocations:
            invocation.update(Status=outcome, StatusDetails=outcome, PluginName="BuildAndPush")
            invocation["ResponseCode"] = 0 if outcome == "Success" else 1
        if outcome == "Success":
            ecr_backends[self.account_id][self.region_name].put_image(
                repository,
                json.dumps({"schemaVersion": 2, "built": image_uri, "base": base}),
                tag,
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            return command
        group_name = output_config.get("CloudWatchLogGroupName")
        if group_name:
            logs = logs_backends[self.account_id][self.region_name]
            for instance_id in kwargs["instance_ids"]:
                for name, lines in (
                    ("stdout", [f"Step {n}/12 : RUN ..." for n in range(1, 60)]),
                    ("stderr", failure),
                ):
                    stream = f"{command.command_id}/{instance_id}/BuildAndPush/{name}"
                    logs.ensure_log_stream(group_name, stream)
                    logs.put_log_events(
                        group_name,
                        stream,
                        [{"timestamp": int(time.time() * 1000), "message": line} for line in lines],
                    )
        return command

    def _image_in_ecr(self: Any, uri: str) -> bool:
        repository, tag = uri.split("/", 1)[1].rsplit(":", 1)
        try:
            ecr_backends[self.account_id][self.region_name].describe_images(
                repository, image_ids=[{"imageTag": tag}]
            )
        except (ImageNotFoundException, RepositoryNotFoundException):
            return False
        return True

    SimpleSystemManagerBackend.send_command = send_to_the_build_host  # type: ignore[method-assign]
    SimpleSystemManagerResponse.send_command = keep_output_config  # type: ignore[method-assign]


# EC2 Fast Launch state per AMI ID (moto has none): what DescribeFastLaunchImages answers.
FAST_LAUNCH: dict[str, dict[str, Any]] = {}
# Image Builder resources by ARN, for the image to read its recipe and distribution.
IMAGE_BUILDER: dict[str, Any] = {}
FAST_LAUNCH_MIN_PARALLEL_LAUNCHES = 6
# moto files each model under the service named by its module (moto.<service>.models).
MOTO_MODEL_MODULE = "moto.imagebuilder.models"


IMAGE_INPUTS = (
    "ImageRecipeArn",
    "InfrastructureConfigurationArn",
    "DistributionConfigurationArn",
)


# Resources updated when one they name with Fn::GetAtt was (module docstring): an image when
# its recipe got a new ARN, a group when its launch template got a new LatestVersionNumber.
GET_ATT_UPDATED = ("AWS::ImageBuilder::Image", "AWS::AutoScaling::AutoScalingGroup")


def _get_att_targets(value: Any) -> set[str]:
    """The resources a template fragment names with Fn::GetAtt."""
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            if key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else str(item).split(".")[0])
            else:
                found |= _get_att_targets(item)
        return found
    if isinstance(value, list):
        return set().union(*(_get_att_targets(item) for item in value)) if value else set()
    return set()


def _patch_image_builder() -> None:
    from moto.cloudformation.parsing import ResourceMap, get_model_map, get_name_type_map
    from moto.core.common_models import CloudFormationModel
    from moto.ec2.models import ec2_backends

    # moto's CloudFormation finds models among CloudFormationModel's direct subclasses.
    class ImageBuilderRecord:
        """One Image Builder resource: its properties and an ARN."""

        resource_type = ""
        arn_kind = ""

        def __init__(
            self, name: str, properties: dict[str, Any], account_id: str, region_name: str
        ) -> None:
            self.name = name
            self.properties = properties
            self.account_id = account_id
            self.region_name = region_name
            version = properties.get("Version", "1.0.0")
            self.arn = (
                f"arn:aws:imagebuilder:{region_name}:{account_id}:{self.arn_kind}/"
                f"{name.lower()}/{version}"
            )
            IMAGE_BUILDER[self.arn] = self

        @staticmethod
        def cloudformation_name_type() -> str:
            return "Name"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr in ("Arn", "Name", "ImageId")

        @property
        def physical_resource_id(self) -> str:
            return self.arn

        def get_cfn_attribute(self, attribute_name: str) -> Any:
            if attribute_name == "Arn":
                return self.arn
            if attribute_name == "Name":
                return self.name
            raise KeyError(attribute_name)

        @classmethod
        def create_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> Any:
            return cls(resource_name, cloudformation_json["Properties"], account_id, region_name)

        @classmethod
        def update_from_cloudformation_json(
            cls,
            original_resource: Any,
            new_resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> Any:
            original_resource.delete(account_id, region_name)
            return cls.create_from_cloudformation_json(
                new_resource_name, cloudformation_json, account_id, region_name
            )

        @classmethod
        def delete_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> None:
            IMAGE_BUILDER.pop(resource_name, None)

        def delete(self, account_id: str, region_name: str) -> None:
            IMAGE_BUILDER.pop(self.arn, None)

        def is_created(self) -> bool:
            return True

    def record(resource_type: str, arn_kind: str) -> type[ImageBuilderRecord]:
        return type(
            resource_type.rsplit("::", 1)[1],
            (ImageBuilderRecord, CloudFormationModel),
            {
                "__module__": MOTO_MODEL_MODULE,
                "resource_type": resource_type,
                "arn_kind": arn_kind,
                "cloudformation_type": staticmethod(lambda: resource_type),
            },
        )

    for resource_type, arn_kind in (
        ("AWS::ImageBuilder::Component", "component"),
        ("AWS::ImageBuilder::ImageRecipe", "image-recipe"),
        ("AWS::ImageBuilder::InfrastructureConfiguration", "infrastructure-configuration"),
        ("AWS::ImageBuilder::DistributionConfiguration", "distribution-configuration"),
    ):
        record(resource_type, arn_kind)

    class Image(ImageBuilderRecord, CloudFormationModel):
        """An image that is built the moment it is created: a Windows AMI in moto's EC2."""

        __module__ = MOTO_MODEL_MODULE

        resource_type = "AWS::ImageBuilder::Image"
        arn_kind = "image"

        def __init__(
            self, name: str, properties: dict[str, Any], account_id: str, region_name: str
        ) -> None:
            recipe = IMAGE_BUILDER[properties["ImageRecipeArn"]]
            super().__init__(recipe.name, recipe.properties, account_id, region_name)
            distribution = IMAGE_BUILDER[properties["DistributionConfigurationArn"]]
            (target,) = [
                item
                for item in distribution.properties["Distributions"]
                if item["Region"] == region_name
            ]
            ami_settings = target.get("AmiDistributionConfiguration", {})
            ec2 = ec2_backends[account_id][region_name]
            ami = ec2.register_image(
                name=ami_settings.get("Name", recipe.name).replace(
                    "{{ imagebuilder:buildDate }}", time.strftime("%Y%m%d%H%M%S")
                ),
                description=ami_settings.get("Description"),
            )
            ami.platform = "windows"
            if ami_settings.get("AmiTags"):
                ec2.create_tags([ami.id], dict(ami_settings["AmiTags"]))
            self.image_id = ami.id
            self.inputs = tuple(properties.get(key) for key in IMAGE_INPUTS)
            for fast_launch in target.get("FastLaunchConfigurations", []):
                if str(fast_launch.get("Enabled")).lower() == "true":
                    _enable_fast_launch(ec2, ami.id, fast_launch)

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::ImageBuilder::Image"

        def get_cfn_attribute(self, attribute_name: str) -> Any:
            if attribute_name == "ImageId":
                return self.image_id
            return super().get_cfn_attribute(attribute_name)

        @classmethod
        def update_from_cloudformation_json(
            cls,
            original_resource: Any,
            new_resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> Any:
            properties = cloudformation_json["Properties"]
            if tuple(properties.get(key) for key in IMAGE_INPUTS) == original_resource.inputs:
                return original_resource
            original_resource.delete(account_id, region_name)
            return cls(new_resource_name, properties, account_id, region_name)

    build_resource_diff = ResourceMap.build_resource_diff

    def diff_with_images(self: Any, other_template: dict[str, Any], *args: Any) -> Any:
        actions = build_resource_diff(self, other_template, *args)
        changed = set(actions["Modify"]) | set(actions["Add"])
        for name, spec in other_template["Resources"].items():
            if (
                spec.get("Type") in GET_ATT_UPDATED
                and name not in changed
                and _get_att_targets(spec.get("Properties", {})) & changed
            ):
                actions["Modify"].append(name)
        return actions

    ResourceMap.build_resource_diff = diff_with_images  # type: ignore[method-assign]

    # moto caches its map of CloudFormation types; the new models must be in it.
    get_model_map.cache_clear()
    get_name_type_map.cache_clear()


def _enable_fast_launch(ec2: Any, image_id: str, settings: dict[str, Any]) -> None:
    parallel = int(settings.get("MaxParallelLaunches", FAST_LAUNCH_MIN_PARALLEL_LAUNCHES))
    if parallel < FAST_LAUNCH_MIN_PARALLEL_LAUNCHES:
        raise ValueError(
            f"EnableFastLaunch: MaxParallelLaunches {parallel}: value must be 6 or greater"
        )
    count = int(settings.get("SnapshotConfiguration", {}).get("TargetResourceCount", 5))
    snapshots = []
    for _ in range(count):
        volume = ec2.create_volume(size=60, zone_name=f"{ec2.region_name}a")
        snapshot = ec2.create_snapshot(volume.id, f"EC2 Fast Launch for {image_id}")
        ec2.delete_volume(volume.id)
        snapshots.append(snapshot.id)
    template = settings.get("LaunchTemplate", {})
    FAST_LAUNCH[image_id] = {
        "state": "enabled",
        "owner": ec2.account_id,
        "parallel": parallel,
        "count": count,
        "template_id": template.get("LaunchTemplateId", ""),
        "template_version": str(template.get("LaunchTemplateVersion", "")),
        "snapshots": snapshots,
        "polls_left": 0,
    }


def _fast_launch_item(image_id: str, entry: dict[str, Any]) -> str:
    return (
        f"<item><imageId>{image_id}</imageId><resourceType>snapshot</resourceType>"
        f"<snapshotConfiguration><targetResourceCount>{entry['count']}"
        "</targetResourceCount></snapshotConfiguration>"
        f"<launchTemplate><launchTemplateId>{entry['template_id']}</launchTemplateId>"
        f"<version>{entry['template_version']}</version></launchTemplate>"
        f"<maxParallelLaunches>{entry['parallel']}</maxParallelLaunches>"
        f"<ownerId>{entry['owner']}</ownerId><state>{entry['state']}</state></item>"
    )


def _patch_fast_launch() -> None:
    from moto.ec2.models import ec2_backends
    from moto.ec2.responses import EC2Response

    def describe_fast_launch_images(self: Any) -> str:
        wanted = self._get_param("ImageIds", []) or list(FAST_LAUNCH)
        items = []
        for image_id in wanted:
            entry = FAST_LAUNCH.get(image_id)
            if entry is None:
                continue
            if entry["state"] == "disabling":
                if entry["polls_left"] == 0:
                    del FAST_LAUNCH[image_id]
                    continue
                entry["polls_left"] -= 1
            items.append(_fast_launch_item(image_id, entry))
        return (
            '<DescribeFastLaunchImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            "<requestId>fast-launch</requestId>"
            f"<fastLaunchImageSet>{''.join(items)}</fastLaunchImageSet>"
            "</DescribeFastLaunchImagesResponse>"
        )

    def disable_fast_launch(self: Any) -> str:
        image_id = self._get_param("ImageId")
        entry = FAST_LAUNCH.get(image_id)
        if entry is None:
            from moto.ec2.exceptions import EC2ClientError

            raise EC2ClientError(
                "InvalidParameter", f"Fast Launch is not enabled for image {image_id}"
            )
        ec2 = ec2_backends[self.current_account][self.region]
        for snapshot_id in entry["snapshots"]:
            ec2.delete_snapshot(snapshot_id)
        entry.update(state="disabling", snapshots=[], polls_left=1)
        return (
            '<DisableFastLaunchResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>fast-launch</requestId><imageId>{image_id}</imageId>"
            f"<state>disabling</state><ownerId>{entry['owner']}</ownerId>"
            "</DisableFastLaunchResponse>"
        )

    def enable_fast_launch(self: Any) -> str:
        image_id = self._get_param("ImageId")
        entry = FAST_LAUNCH.get(image_id)
        if entry is None or entry["state"] != "enabled":
            from moto.ec2.exceptions import EC2ClientError

            raise EC2ClientError(
                "InvalidParameter", f"the simulation only updates enabled images ({image_id})"
            )
        parallel = int(self._get_param("MaxParallelLaunches") or entry["parallel"])
        if parallel < FAST_LAUNCH_MIN_PARALLEL_LAUNCHES:
            from moto.ec2.exceptions import EC2ClientError

            raise EC2ClientError(
                "InvalidParameterValue", "MaxParallelLaunches must be 6 or greater"
            )
        template = self._get_param("LaunchTemplate") or {}
        snapshots = self._get_param("SnapshotConfiguration") or {}
        entry.update(
            parallel=parallel,
            count=int(snapshots.get("TargetResourceCount", entry["count"])),
            template_id=template.get("LaunchTemplateId", entry["template_id"]),
            template_version=str(template.get("Version", entry["template_version"])),
        )
        return (
            '<EnableFastLaunchResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>fast-launch</requestId><imageId>{image_id}</imageId>"
            f"<state>enabled</state><ownerId>{entry['owner']}</ownerId>"
            "</EnableFastLaunchResponse>"
        )

    EC2Response.describe_fast_launch_images = describe_fast_launch_images  # type: ignore[attr-defined]
    EC2Response.enable_fast_launch = enable_fast_launch  # type: ignore[attr-defined]
    EC2Response.disable_fast_launch = disable_fast_launch  # type: ignore[attr-defined]


def _patch_in_place_updates() -> None:
    from moto.cloudformation import parsing
    from moto.cloudformation.parsing import resource_class_from_type

    parse_and_update_resource = parsing.parse_and_update_resource

    def update_or_keep(
        logical_id: str, resource_json: Any, resources_map: Any, *args: Any, **kwargs: Any
    ) -> Any:
        condition = resource_json.get("Condition")
        parsed = resources_map._parsed_resources
        if condition and not resources_map.lazy_condition_map[condition]:
            if parsed.get(logical_id) is not None:
                resources_map._delete_resource(parsed[logical_id], resource_json)
            return None
        if logical_id in parsed and parsed[logical_id] is None:
            del parsed[logical_id]  # its condition was false: created now
            return resources_map[logical_id]
        updated = parse_and_update_resource(
            logical_id, resource_json, resources_map, *args, **kwargs
        )
        model = resource_class_from_type(resource_json.get("Type", ""))
        # None also for a type moto does not model at all: nothing to keep then.
        if (
            updated is None
            and model is not None
            and hasattr(model.update_from_cloudformation_json, "__isabstractmethod__")
        ):
            return resources_map[logical_id]
        return updated

    parsing.parse_and_update_resource = update_or_keep


def _patch_task_definitions() -> None:
    from moto.core.utils import pascal_to_camelcase, remap_nested_keys
    from moto.ecs.models import TaskDefinition, ecs_backends

    def described(properties: dict[str, Any]) -> dict[str, Any]:
        """RegisterTaskDefinition's arguments from the resource's properties."""
        return {
            "family": properties["Family"],
            "container_definitions": remap_nested_keys(
                properties.get("ContainerDefinitions", []), pascal_to_camelcase
            ),
            "network_mode": properties.get("NetworkMode"),
            "requires_compatibilities": properties.get("RequiresCompatibilities"),
            "cpu": properties.get("Cpu"),
            "memory": properties.get("Memory"),
            "task_role_arn": properties.get("TaskRoleArn"),
            "execution_role_arn": properties.get("ExecutionRoleArn"),
        }

    def create(
        cls: Any,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **_: Any,
    ) -> Any:
        backend = ecs_backends[account_id][region_name]
        return backend.register_task_definition(**described(cloudformation_json["Properties"]))

    def update(  # noqa: PLR0917 (moto's signature)
        cls: Any,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        wanted = described(cloudformation_json["Properties"])
        # Unset properties take moto's defaults (network mode bridge): compare the ones set.
        if all(
            getattr(original_resource, k, None) == v for k, v in wanted.items() if v is not None
        ):
            return original_resource
        backend = ecs_backends[account_id][region_name]
        revision = backend.register_task_definition(**wanted)
        backend.deregister_task_definition(original_resource.arn)
        return revision

    def delete(self: Any, account_id: str, region_name: str) -> None:
        if self.status == "ACTIVE":
            ecs_backends[account_id][region_name].deregister_task_definition(self.arn)

    TaskDefinition.create_from_cloudformation_json = classmethod(create)  # type: ignore[method-assign,assignment]
    TaskDefinition.update_from_cloudformation_json = classmethod(update)  # type: ignore[method-assign,assignment]
    TaskDefinition.delete = delete  # type: ignore[attr-defined]


STACK_NAME = re.compile(r"[a-zA-Z][-a-zA-Z0-9]{0,127}")


def _check_stack_name(name: str) -> None:
    from moto.cloudformation.exceptions import ValidationError

    if not name.startswith("arn:") and not STACK_NAME.fullmatch(name):
        raise ValidationError(
            message=f"1 validation error detected: Value '{name}' at 'stackName' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            "[a-zA-Z][-a-zA-Z0-9]*"
        )


def _patch_change_sets() -> None:
    from moto.cloudformation import parsing
    from moto.cloudformation.models import CloudFormationBackend, Event, Stack
    from moto.cloudformation.parsing import ResourceMap
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.ssm.models import ssm_backends

    create_change_set = CloudFormationResponse.create_change_set

    def create_change_set_like_aws(self: Any) -> Any:
        _check_stack_name(str(self._get_param("StackName")))
        # The backend marks an unchanged change set FAILED, as AWS does; skip the early raise.
        self._validate_different_update = lambda *_args, **_kwargs: None
        return create_change_set(self)

    def has_parameters(self: Any, other_parameters: dict[str, Any]) -> bool:
        current = self.resource_map.resolved_parameters
        return all(
            key in current and _normalise(current[key]) == _normalise(value)
            for key, value in other_parameters.items()
        )

    execute_change_set = CloudFormationBackend.execute_change_set
    parse_and_create_resource = parsing.parse_and_create_resource

    def create_or_name_the_failure(
        logical_id: str, resource_json: Any, *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return parse_and_create_resource(logical_id, resource_json, *args, **kwargs)
        except Exception as error:
            # The innermost resource is the one that failed; its callers only pass it on.
            if not hasattr(error, "failed_resource"):
                error.failed_resource = (logical_id, resource_json.get("Type", ""))  # type: ignore[attr-defined]
            raise

    parsing.parse_and_create_resource = create_or_name_the_failure

    def execute_and_refresh_outputs(
        self: Any, change_set_name: str, stack_name: str | None = None
    ) -> None:
        change_set = self.describe_change_set(change_set_name)
        stack = self.stacks[change_set.stack_id]
        try:
            execute_change_set(self, change_set_name=change_set_name, stack_name=stack_name)
        except Exception as error:
            if change_set.change_set_type != "CREATE":
                raise
            # AWS rolls a failed create back (deleting what it created) and keeps the stack.
            failed = getattr(error, "failed_resource", None)
            if failed is not None:
                stack.events.append(
                    Event(
                        stack_id=stack.stack_id,
                        stack_name=stack.name,
                        logical_resource_id=failed[0],
                        physical_resource_id="",
                        resource_type=failed[1],
                        resource_status="CREATE_FAILED",
                        resource_status_reason=str(error),
                        resource_properties=None,
                    )
                )
            stack._add_stack_event(
                "ROLLBACK_IN_PROGRESS",
                resource_status_reason="The following resource(s) failed to create: "
                f"[{failed[0] if failed else ''}]. Rollback requested by user.",
            )
            with contextlib.suppress(Exception):
                stack.resource_map.delete()
            stack.status = "ROLLBACK_COMPLETE"
            stack._add_stack_event("ROLLBACK_COMPLETE")
            change_set.execution_status = "EXECUTE_FAILED"
            return
        stack._parse_template()
        stack.output_map = stack._create_output_map()
        for name in [
            name
            for name, export in self.exports.items()
            if export.exporting_stack_id == stack.stack_id
        ]:
            del self.exports[name]
        for export in stack.exports:
            self.exports[export.name] = export

    parse_ssm_parameter = ResourceMap.parse_ssm_parameter

    def parse_or_keep_resolved(self: Any, value: str, value_type: str) -> Any:
        if ssm_backends[self._account_id][self._region_name].get_parameter(value) is None:
            return value
        return parse_ssm_parameter(self, value, value_type)

    ResourceMap.parse_ssm_parameter = parse_or_keep_resolved  # type: ignore[method-assign]
    CloudFormationResponse.create_change_set = create_change_set_like_aws  # type: ignore[method-assign]
    Stack.has_parameters = has_parameters  # type: ignore[method-assign]
    CloudFormationBackend.execute_change_set = execute_and_refresh_outputs  # type: ignore[method-assign]


def cloudformation_create_with(
    cls: Any,
    after: Callable[[Any, dict[str, Any], str, str], None],
    before: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """`cls.create_from_cloudformation_json` as a classmethod that runs `before(properties)`
    first and `after(resource, properties, account_id, region_name)` on what it created: the
    properties moto's own create drops."""
    create = cls.create_from_cloudformation_json.__func__

    def create_with(
        klass: Any,
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        properties = cloudformation_json.get("Properties", {})
        if before is not None:
            before(properties)
        resource = create(
            klass, resource_name, cloudformation_json, account_id, region_name, **kwargs
        )
        after(resource, properties, account_id, region_name)
        return resource

    return classmethod(create_with)


def _patch_bucket_versioning() -> None:
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    def set_versioning(
        bucket: Any, properties: dict[str, Any], account_id: str, region: str
    ) -> None:
        status = properties.get("VersioningConfiguration", {}).get("Status")
        if status:
            s3_backends[account_id][get_partition(region)].put_bucket_versioning(
                bucket.name, status
            )

    FakeBucket.create_from_cloudformation_json = cloudformation_create_with(  # type: ignore[method-assign]
        FakeBucket, set_versioning
    )


def mixed_instances_group_patch() -> Any:
    """FakeAutoScalingGroup.create_from_cloudformation_json as CloudFormation creates a group:
    without the NoValue overrides, with CapacityRebalance (a test may monkeypatch it in)."""
    from moto.autoscaling.models import FakeAutoScalingGroup

    def keep_capacity_rebalance(group: Any, properties: dict[str, Any], *_: str) -> None:
        group.capacity_rebalance = str(properties.get("CapacityRebalance", False)).lower() == "true"

    return cloudformation_create_with(
        FakeAutoScalingGroup, keep_capacity_rebalance, before=_drop_no_value_overrides
    )


def _drop_no_value_overrides(properties: dict[str, Any]) -> None:
    template = (properties.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}
    if template.get("Overrides") is not None:
        template["Overrides"] = [item for item in template["Overrides"] if item is not None]


def group_update_in_place(  # noqa: PLR0917 (moto's signature)
    cls: Any,
    original_resource: Any,
    new_resource_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
) -> Any:
    """FakeAutoScalingGroup.update_from_cloudformation_json as CloudFormation updates a group:
    in place, keeping its instances, desired capacity and warm pool (moto deletes and re-creates
    it, which terminates them all)."""
    properties = cloudformation_json["Properties"]
    if original_resource.name != new_resource_name:  # a new name replaces the group on AWS too
        return _ORIGINAL_GROUP_UPDATE(
            original_resource, new_resource_name, cloudformation_json, account_id, region_name
        )
    _drop_no_value_overrides(properties)
    policy = properties.get("MixedInstancesPolicy") or None
    if policy is not None:
        distribution = policy.setdefault("InstancesDistribution", {})
        distribution.setdefault("OnDemandAllocationStrategy", "prioritized")
    group = original_resource

    def number(key: str) -> int | None:
        return None if properties.get(key) is None else int(properties[key])

    group.update(
        availability_zones=properties.get("AvailabilityZones", []),
        desired_capacity=number("DesiredCapacity"),
        max_size=number("MaxSize"),
        min_size=number("MinSize"),
        launch_config_name=properties.get("LaunchConfigurationName"),
        launch_template=properties.get("LaunchTemplate", {}),
        vpc_zone_identifier=",".join(properties.get("VPCZoneIdentifier", [])) or None,
        health_check_period=number("HealthCheckGracePeriod"),
        health_check_type=properties.get("HealthCheckType"),
        mixed_instances_policy=policy,
    )
    group.capacity_rebalance = str(properties.get("CapacityRebalance", False)).lower() == "true"
    return group


_ORIGINAL_GROUP_UPDATE: Any = None


def _patch_mixed_instances_group() -> None:
    global _ORIGINAL_GROUP_UPDATE  # noqa: PLW0603 (moto's own method, once per process)
    from moto.autoscaling.models import FakeAutoScalingGroup

    FakeAutoScalingGroup.create_from_cloudformation_json = mixed_instances_group_patch()  # type: ignore[method-assign]
    if _ORIGINAL_GROUP_UPDATE is None:
        _ORIGINAL_GROUP_UPDATE = FakeAutoScalingGroup.update_from_cloudformation_json
    FakeAutoScalingGroup.update_from_cloudformation_json = classmethod(group_update_in_place)  # type: ignore[method-assign,assignment]


def _patch_repository_empty_on_delete() -> None:
    from moto.ecr.models import Repository, ecr_backends

    def remember_empty_on_delete(repository: Any, properties: dict[str, Any], *_: str) -> None:
        repository.empty_on_delete = str(properties.get("EmptyOnDelete")).lower() == "true"

    def delete(self: Any, account_id: str, region_name: str) -> None:
        ecr_backends[account_id][region_name].delete_repository(
            self.name, force=getattr(self, "empty_on_delete", False)
        )

    Repository.create_from_cloudformation_json = cloudformation_create_with(  # type: ignore[method-assign]
        Repository, remember_empty_on_delete
    )
    Repository.delete = delete  # type: ignore[method-assign]


def _patch_vpc_deletion() -> None:
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.vpcs import VPC

    delete_vpc = VPC.delete_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def delete_vpc_after_its_resources(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        backend = ec2_backends[account_id][region_name]
        vpc_id = resource_name
        if backend.describe_subnets(filters={"vpc-id": vpc_id}):
            # Subnets go first; moto's own delete refuses, and the stack deletion retries later.
            delete_vpc(cls, resource_name, cloudformation_json, account_id, region_name)
        for nat in list(backend.nat_gateways.values()):
            if nat.vpc_id == vpc_id:
                backend.delete_nat_gateway(nat.id)
                backend.nat_gateways.pop(nat.id)
        for endpoint in list(backend.vpc_end_points.values()):
            if endpoint.vpc_id == vpc_id:
                backend.delete_vpc_endpoints([endpoint.id])
        for flow_log in list(backend.flow_logs.values()):
            if flow_log.resource_id == vpc_id:
                backend.delete_flow_logs([flow_log.id])
        for gateway in backend.describe_internet_gateways(filters={"attachment.vpc-id": vpc_id}):
            backend.detach_internet_gateway(gateway.id, vpc_id)
            backend.delete_internet_gateway(gateway.id)
        for table in backend.describe_route_tables(filters={"vpc-id": vpc_id}):
            if table.main_association_id is None:
                table._associations.clear()
                backend.delete_route_table(table.id)
        for eni in list(backend.enis.values()):
            if eni.subnet.vpc_id == vpc_id:
                backend.delete_network_interface(eni.id)
        delete_vpc(cls, resource_name, cloudformation_json, account_id, region_name)

    VPC.delete_from_cloudformation_json = classmethod(delete_vpc_after_its_resources)  # type: ignore[method-assign,assignment]


# --- EC2 Auto Scaling warm pools (module docstring) ------------------------------------------

LAUNCH_TRANSITION = "autoscaling:EC2_INSTANCE_LAUNCHING"
# Lifecycle states an instance of the group counts in while it launches or serves.
IN_GROUP_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")
_COMPLETES_HOOK = re.compile(
    r"Complete-ASLifecycleAction\b[^\n]*-LifecycleHookName\s+[\"']?([A-Za-z0-9_.-]+)"
)
_PERSIST = "<persist>true</persist>"
INSTANCE_MAY_COMPLETE: list[Callable[[Any, str], bool]] = []
"""Extra checks an emulated instance's own CompleteLifecycleAction must pass (group, instance)."""


def _now() -> float:
    """The emulation's clock (a test moves it past a hook's HeartbeatTimeout)."""
    return time.time()


def _launch_hook(group: Any) -> Any:
    hooks = group.autoscaling_backend.lifecycle_hooks.values()
    return next(
        (
            hook
            for hook in hooks
            if hook.auto_scaling_group_name == group.name
            and hook.lifecycle_transition == LAUNCH_TRANSITION
        ),
        None,
    )


def _emulated(group: Any) -> bool:
    return getattr(group, "warm_pool", None) is not None or _launch_hook(group) is not None


def _warm(group: Any) -> list[Any]:
    if not hasattr(group, "warm_instances"):
        group.warm_instances = []
    return group.warm_instances  # type: ignore[no-any-return]


def _activities(group: Any) -> list[Any]:
    if not hasattr(group, "warm_activities"):
        group.warm_activities = []
    return group.warm_activities  # type: ignore[no-any-return]


def _record(group: Any, description: str, state: Any, *, done: bool = False) -> None:
    from moto.autoscaling.models import Activity

    activity = Activity(
        description=description,
        cause=f"At {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} an instance was "
        f"started in response to the warm pool or desired capacity of group {group.name}.",
        auto_scaling_group=group,
        status_code="Successful" if done else "InProgress",
    )
    if not done:
        activity.end_time = None  # type: ignore[assignment]
    activity.instance_id = state.instance.id  # type: ignore[attr-defined]
    _activities(group).append(activity)


def _finish(group: Any, state: Any) -> None:
    from moto.core.utils import utcnow

    for activity in _activities(group):
        if getattr(activity, "instance_id", None) == state.instance.id and (
            activity.status_code == "InProgress"
        ):
            activity.status_code = "Successful"
            activity.end_time = utcnow()
            activity.progress = 100


def _user_data(group: Any) -> str:
    raw = group.user_data
    if not raw:
        return ""
    if hasattr(raw, "decode"):
        return str(raw.decode())
    import base64

    return base64.b64decode(raw).decode(errors="replace")


def _completes_itself(group: Any, state: Any, hook: Any) -> bool:
    """Whether the instance's own user data completes `hook` at this boot (module docstring)."""
    text = _user_data(group)
    if hook.name not in _COMPLETES_HOOK.findall(text):
        return False
    if getattr(state, "boots", 1) > 1 and _PERSIST not in text:
        return False
    return all(check(group, state.instance.id) for check in INSTANCE_MAY_COMPLETE)


def _wait(state: Any, waiting: str) -> None:
    state.lifecycle_state = waiting
    state.waiting_since = _now()


def _continue(group: Any, state: Any, hook: Any, result: str) -> None:
    """A lifecycle action ends: CONTINUE moves on, ABANDON terminates the instance."""
    warmed = state.lifecycle_state.startswith("Warmed:")
    if result.upper() == "ABANDON":
        group.autoscaling_backend.ec2_backend.terminate_instances([state.instance.id])
        for states in (_warm(group), group.instance_states):
            if state in states:
                states.remove(state)
        return
    state.lifecycle_state = "Warmed:Pending:Proceed" if warmed else "Pending:Proceed"


def _timed_out(state: Any, hook: Any) -> bool:
    return _now() - getattr(state, "waiting_since", _now()) >= int(hook.heartbeat_timeout)


def warm_pool_step(group: Any) -> None:
    """One step of every emulated instance of `group` (module docstring), then the refill."""
    if not _emulated(group):
        return
    hook = _launch_hook(group)
    if _deleting(group):
        _step_deletion(group)
    for state in list(_warm(group)):
        _step_in_pool(group, state, hook)
    for state in list(group.instance_states):
        _step_in_group(group, state, hook)
    refill(group)


def _waited(group: Any, state: Any, hook: Any) -> None:
    """An instance in a :Wait state: its user data completes the action, or the timeout does."""
    if _completes_itself(group, state, hook):
        _continue(group, state, hook, "CONTINUE")
    elif _timed_out(state, hook):
        _continue(group, state, hook, hook.default_result)


def _step_in_pool(group: Any, state: Any, hook: Any) -> None:
    current = state.lifecycle_state
    if current == WARMED_TERMINATING:
        group.autoscaling_backend.ec2_backend.terminate_instances([state.instance.id])
        group.warm_instances.remove(state)
        _record(group, f"Terminating EC2 instance: {state.instance.id}", state, done=True)
    elif current == "Warmed:Pending":
        if hook is None:
            state.lifecycle_state = "Warmed:Pending:Proceed"
        else:
            _wait(state, "Warmed:Pending:Wait")
    elif current == "Warmed:Pending:Wait":
        _waited(group, state, hook)
    elif current == "Warmed:Pending:Proceed":
        pool_state = group.warm_pool.pool_state if group.warm_pool else "Stopped"
        if pool_state in ("Stopped", "Hibernated"):
            group.autoscaling_backend.ec2_backend.stop_instances([state.instance.id])
        state.lifecycle_state = f"Warmed:{pool_state}"
        _finish(group, state)


def _step_in_group(group: Any, state: Any, hook: Any) -> None:
    current = state.lifecycle_state
    if current == "Pending":
        if hook is None:
            state.lifecycle_state = "InService"
            _finish(group, state)
        else:
            _wait(state, "Pending:Wait")
    elif current == "Pending:Wait" and hook is not None:
        _waited(group, state, hook)
    elif current == "Pending:Proceed":
        state.lifecycle_state = "InService"
        _finish(group, state)


def pool_target(group: Any) -> int:
    """Instances the warm pool holds: max(MinSize, MaxGroupPreparedCapacity - desired)."""
    pool = group.warm_pool
    prepared = pool.max_group_prepared_capacity
    if prepared is None or int(prepared) < 0:
        prepared = group.max_size
    return max(int(pool.min_size or 0), int(prepared) - int(group.desired_capacity or 0))


def refill(group: Any) -> None:
    """Launch into the pool what it misses; terminate what it has too many of."""
    if getattr(group, "warm_pool", None) is None or _deleting(group):
        return
    pool = [s for s in _warm(group) if s.lifecycle_state != WARMED_TERMINATING]
    missing = pool_target(group) - len(pool)
    if missing > 0:
        before = len(group.instance_states)
        _ORIGINAL["launch"](group, missing, group.get_propagated_tags())
        launched = group.instance_states[before:]
        del group.instance_states[before:]
        for state in launched:
            state.lifecycle_state = "Warmed:Pending"
            state.boots = 1
            state.launched_from = _current_template(group)
            _warm(group).append(state)
            description = f"Launching a new EC2 instance into warm pool: {state.instance.id}"
            _record(group, description, state)
    elif missing < 0:
        # The ones still warming up go first; Auto Scaling terminates them on its own clock.
        surplus = sorted(pool, key=lambda s: s.lifecycle_state.startswith("Warmed:Pending"))[
            missing:
        ]
        for state in surplus:
            state.lifecycle_state = WARMED_TERMINATING


def _draw(group: Any, count: int) -> int:
    """Start up to `count` warmed instances from the pool into the group; how many."""
    from moto.core.utils import utcnow

    if _deleting(group):
        return 0
    ready = [s for s in _warm(group) if s.lifecycle_state in WARMED_STATES][:count]
    ec2 = group.autoscaling_backend.ec2_backend
    for state in ready:
        group.warm_instances.remove(state)
        if state.instance.state != "running":
            ec2.start_instances([state.instance.id])
            state.instance.launch_time = utcnow()  # EC2's LaunchTime is the last start
        state.boots = getattr(state, "boots", 1) + 1
        state.lifecycle_state = "Pending"
        group.instance_states.append(state)
        _record(group, f"Launching a new EC2 instance from warm pool: {state.instance.id}", state)
    return len(ready)


WARMED_STATES = ("Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated")
WARMED_TERMINATING = "Warmed:Terminating"


def _launch_with_pool(self: Any, count_needed: int, propagated_tags: dict[str, str]) -> None:
    """FakeAutoScalingGroup.replace_autoscaling_group_instances: warmed instances first."""
    if not _emulated(self):
        _ORIGINAL["launch"](self, count_needed, propagated_tags)
        return
    cold = count_needed - _draw(self, count_needed)
    if cold > 0:
        _launch_cold(self, cold, propagated_tags)


def _launch_cold(group: Any, count: int, propagated_tags: dict[str, str]) -> None:
    before = len(group.instance_states)
    _ORIGINAL["launch"](group, count, propagated_tags)
    for state in group.instance_states[before:]:
        state.lifecycle_state = "Pending"
        state.boots = 1
        state.launched_from = _current_template(group)
        _record(group, f"Launching a new EC2 instance: {state.instance.id}", state)


def _set_desired_and_refill(self: Any, new_capacity: int | None) -> None:
    """FakeAutoScalingGroup.set_desired_capacity: a terminated instance is a scaling activity,
    and the pool refills afterwards."""
    before = {s.instance.id: s for s in self.instance_states}
    _ORIGINAL["set_desired"](self, new_capacity)
    if not _emulated(self):
        return
    for instance_id, state in before.items():
        if all(s.instance.id != instance_id for s in self.instance_states):
            _record(self, f"Terminating EC2 instance: {instance_id}", state, done=True)
    refill(self)


def _active_instances(self: Any) -> list[Any]:
    """Pending instances count toward the desired capacity too (moto counts only InService)."""
    return [s for s in self.instance_states if s.lifecycle_state in IN_GROUP_STATES]


def _warm_pool_size(self: Any) -> int | None:
    return len(_warm(self)) if getattr(self, "warm_pool", None) is not None else None


def _put_warm_pool_and_fill(self: Any, **kwargs: Any) -> None:
    _ORIGINAL["put_warm_pool"](self, **kwargs)
    refill(self)


def _delete_warm_pool(self: Any, group_name: str, force_delete: bool = False) -> None:
    """The pool goes at once with its instances: CloudFormation's delete of the resource, which
    waits for them."""
    group = self.autoscaling_groups.get(group_name)
    if group is None:  # deleted with its group (moto deletes a stack's resources in any order)
        return
    ids = [s.instance.id for s in _warm(group)]
    if ids:
        self.ec2_backend.terminate_instances(ids)
    group.warm_instances = []
    group.warm_pool = None


WARM_POOL_PENDING_DELETE = "PendingDelete"


def _deleting(group: Any) -> bool:
    pool = getattr(group, "warm_pool", None)
    return pool is not None and getattr(pool, "status", None) == WARM_POOL_PENDING_DELETE


def delete_warm_pool_api(backend: Any, group_name: str, *, force_delete: bool) -> None:
    """DeleteWarmPool as the API does it: refused while the pool holds instances unless
    ForceDelete ("If there are instances in the warm pool, or if scaling activities are in
    progress, use ... --force-delete. This option also terminates the Amazon EC2 instances and
    any outstanding lifecycle actions": Auto Scaling user guide, "AWS CLI examples for working
    with warm pools", Example 8). The pool is marked PendingDelete (WarmPoolConfiguration
    Status), its instances are Warmed:Terminating, and the next steps terminate them and then
    remove the pool: ForceDelete returns "without waiting for all instances to be terminated"
    (DeleteWarmPool API reference)."""
    from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError

    groups = backend.describe_auto_scaling_groups([group_name])
    if not groups or groups[0].warm_pool is None:
        raise ValidationError(f"No warm pool found for Auto Scaling group {group_name}")
    group = groups[0]
    if _warm(group) and not force_delete:
        raise AutoscalingClientError(
            "ResourceInUse",
            f"The warm pool of {group_name} has {len(_warm(group))} instance(s); use ForceDelete",
        )
    group.warm_pool.status = WARM_POOL_PENDING_DELETE
    for state in _warm(group):
        state.lifecycle_state = WARMED_TERMINATING


def _step_deletion(group: Any) -> None:
    """A pool marked for deletion goes once its instances are terminated (_step_in_pool)."""
    if not _warm(group):
        group.warm_pool = None


def _delete_group_and_pool(self: Any, group_name: str) -> None:
    group = self.autoscaling_groups.get(group_name)
    if group is not None and _warm(group):
        self.ec2_backend.terminate_instances([s.instance.id for s in _warm(group)])
        group.warm_instances = []
    _ORIGINAL["delete_group"](self, group_name)


def complete_lifecycle_action(
    backend: Any, group_name: str, hook_name: str, instance_id: str, result: str
) -> None:
    """CompleteLifecycleAction for an instance waiting on `hook_name`."""
    from moto.autoscaling.exceptions import ValidationError

    group = backend.describe_auto_scaling_groups([group_name])[0]
    hook = _launch_hook(group)
    if hook is None or hook.name != hook_name:
        raise ValidationError(f"No Lifecycle Hook named {hook_name} found for group {group_name}")
    for state in [*_warm(group), *group.instance_states]:
        if state.instance.id == instance_id and state.lifecycle_state.endswith("Pending:Wait"):
            _continue(group, state, hook, result)
            return
    raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")


def _respond_complete_lifecycle_action(self: Any) -> Any:
    from moto.core.responses import EmptyResult

    complete_lifecycle_action(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("InstanceId"),
        self._get_param("LifecycleActionResult", "CONTINUE"),
    )
    return EmptyResult()


def _respond_describe_groups(self: Any) -> Any:
    for group in self.autoscaling_backend.autoscaling_groups.values():
        warm_pool_step(group)
    return _ORIGINAL["describe_groups"](self)


def _respond_describe_warm_pool(self: Any) -> Any:
    from moto.core.responses import ActionResult

    group = self.autoscaling_backend.describe_auto_scaling_groups(
        [self._get_param("AutoScalingGroupName")]
    )[0]
    warm_pool_step(group)
    if group.warm_pool is None:
        return ActionResult({"Instances": []})
    return ActionResult({"WarmPoolConfiguration": group.warm_pool, "Instances": list(_warm(group))})


def _respond_delete_warm_pool(self: Any) -> Any:
    from moto.core.responses import EmptyResult

    delete_warm_pool_api(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        force_delete=str(self._get_param("ForceDelete")).lower() == "true",
    )
    return EmptyResult()


def _respond_describe_activities(self: Any) -> Any:
    from moto.core.responses import ActionResult

    name = self._get_param("AutoScalingGroupName")
    groups = self.autoscaling_backend.autoscaling_groups
    found = [
        activity
        for group in groups.values()
        if name in (None, group.name)
        for activity in _activities(group)
    ]
    # Newest first, as Auto Scaling lists them.
    found.sort(key=lambda a: a.start_time, reverse=True)
    return ActionResult({"Activities": found})


def _current_template(group: Any) -> tuple[str, str] | None:
    """The launch template ID and version number the group launches from now."""
    template = group.ec2_launch_template
    if template is None:
        return None
    version = str(group.launch_template_version)
    if version == "$Latest":
        version = str(template.latest_version_number)
    elif version in ("$Default", "None"):
        version = str(template.default_version_number)
    return str(template.id), version


def _launched_template(self: Any) -> dict[str, Any] | None:
    """InstanceState.launch_template: the version the instance was launched from (moto reports
    the template's default version for every instance, so a new version changes them all)."""
    launched = getattr(self, "launched_from", None)
    if launched is None:
        return _ORIGINAL["instance_template"].fget(self)  # type: ignore[no-any-return]
    template_id, version = launched
    template = self.auto_scaling_group.ec2_backend.get_launch_template(template_id)
    return {
        "LaunchTemplateId": template_id,
        "LaunchTemplateName": template.name,
        "Version": version,
    }


# --- EC2 Auto Scaling instance refreshes (moto has none) ------------------------------------------

REFRESH_ACTIVE = ("Pending", "InProgress", "Cancelling")


def _refreshes(group: Any) -> list[dict[str, Any]]:
    if not hasattr(group, "instance_refreshes"):
        group.instance_refreshes = []
    return group.instance_refreshes  # type: ignore[no-any-return]


def _matches(group: Any, state: Any) -> bool:
    return getattr(state, "launched_from", None) in (None, _current_template(group))


def start_instance_refresh(
    backend: Any, group_name: str, preferences: dict[str, Any], desired: dict[str, Any] | None
) -> str:
    """StartInstanceRefresh (module docstring): what it will replace, decided now."""
    import uuid

    from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
    from moto.core.utils import utcnow

    groups = backend.describe_auto_scaling_groups([group_name])
    if not groups:
        raise ValidationError(f"AutoScalingGroup name not found - {group_name}")
    group = groups[0]
    if desired:
        raise ValidationError("the emulation does not take a DesiredConfiguration")
    if any(refresh["Status"] in REFRESH_ACTIVE for refresh in _refreshes(group)):
        raise AutoscalingClientError(
            "InstanceRefreshInProgress",
            f"An Instance Refresh is already in progress on {group_name}",
        )
    low = preferences.get("MinHealthyPercentage")
    high = preferences.get("MaxHealthyPercentage")
    # RefreshPreferences: "If you specify MaxHealthyPercentage, you must also specify
    # MinHealthyPercentage, and the difference between them cannot be greater than 100."
    if high is not None and (low is None or int(high) - int(low) > 100):
        raise ValidationError("MaxHealthyPercentage needs a MinHealthyPercentage at most 100 below")
    skip = str(preferences.get("SkipMatching", False)).lower() == "true"
    live = [s.instance.id for s in group.instance_states if not (skip and _matches(group, s))]
    warm = [s.instance.id for s in _warm(group) if not (skip and _matches(group, s))]
    refresh = {
        "InstanceRefreshId": str(uuid.uuid4()),
        "AutoScalingGroupName": group.name,
        "Status": "Pending",
        "StatusReason": "",
        "StartTime": utcnow(),
        "Preferences": dict(preferences),
        "live": live,
        "warm": warm,
        "total": (len(live), len(warm)),
    }
    _refreshes(group).append(refresh)
    return str(refresh["InstanceRefreshId"])


def _percent(left: int, total: int) -> int:
    return 100 if total == 0 else round(100 * (total - left) / total)


def _described(refresh: dict[str, Any]) -> dict[str, Any]:
    live, warm = len(refresh["live"]), len(refresh["warm"])
    total_live, total_warm = refresh["total"]
    shown = {k: v for k, v in refresh.items() if k[0].isupper()}
    shown["InstancesToUpdate"] = live + warm
    shown["PercentageComplete"] = _percent(live + warm, total_live + total_warm)
    shown["ProgressDetails"] = {
        "LivePoolProgress": {
            "PercentageComplete": _percent(live, total_live),
            "InstancesToUpdate": live,
        },
        "WarmPoolProgress": {
            "PercentageComplete": _percent(warm, total_warm),
            "InstancesToUpdate": warm,
        },
    }
    return shown


def refresh_step(group: Any) -> None:
    """One step of the group's active refresh: one instance replaced, the group's first, then
    the warm pool's ("An instance refresh first replaces InService instances. Then it replaces
    instances in the warm pool": Auto Scaling user guide, "Update the instances in a warm
    pool"); a replaced pool instance is terminated and the pool's refill launches its
    successor from the group's launch template."""
    from moto.core.utils import utcnow

    for refresh in _refreshes(group):
        status = refresh["Status"]
        if status == "Pending":
            refresh["Status"] = "InProgress"
        elif status == "Cancelling":
            refresh.update(Status="Cancelled", EndTime=utcnow())
        elif status == "InProgress" and (refresh["live"] or refresh["warm"]):
            _replace_one(group, refresh)
        elif status == "InProgress":  # the last replacement has had its step to start
            refresh.update(Status="Successful", EndTime=utcnow())


def _replace_one(group: Any, refresh: dict[str, Any]) -> None:
    backend = group.autoscaling_backend
    while refresh["live"]:
        instance_id = refresh["live"].pop(0)
        state = next((s for s in group.instance_states if s.instance.id == instance_id), None)
        if state is not None:
            # Terminate, then launch (MaxHealthyPercentage 100): from the group's template.
            group.instance_states.remove(state)
            backend.ec2_backend.terminate_instances([instance_id])
            _record(group, f"Terminating EC2 instance: {instance_id}", state, done=True)
            _launch_cold(group, 1, group.get_propagated_tags())
            return
    while refresh["warm"]:
        instance_id = refresh["warm"].pop(0)
        state = next((s for s in _warm(group) if s.instance.id == instance_id), None)
        if state is not None:
            backend.ec2_backend.terminate_instances([instance_id])
            group.warm_instances.remove(state)
            _record(group, f"Terminating EC2 instance: {instance_id}", state, done=True)
            refill(group)
            return


def _respond_start_instance_refresh(self: Any) -> Any:
    from moto.core.responses import ActionResult

    refresh_id = start_instance_refresh(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("Preferences", {}) or {},
        self._get_param("DesiredConfiguration"),
    )
    return ActionResult({"InstanceRefreshId": refresh_id})


def _respond_describe_instance_refreshes(self: Any) -> Any:
    """Newest first, as Auto Scaling lists them; each call takes one step (module docstring)."""
    from moto.core.responses import ActionResult

    group = self.autoscaling_backend.describe_auto_scaling_groups(
        [self._get_param("AutoScalingGroupName")]
    )[0]
    refresh_step(group)
    wanted = set(self._get_param("InstanceRefreshIds", []) or [])
    found = [
        _described(refresh)
        for refresh in reversed(_refreshes(group))
        if not wanted or refresh["InstanceRefreshId"] in wanted
    ]
    return ActionResult({"InstanceRefreshes": found})


def _respond_cancel_instance_refresh(self: Any) -> Any:
    from moto.autoscaling.exceptions import AutoscalingClientError
    from moto.core.responses import ActionResult

    name = self._get_param("AutoScalingGroupName")
    group = self.autoscaling_backend.describe_auto_scaling_groups([name])[0]
    active = [r for r in _refreshes(group) if r["Status"] in ("Pending", "InProgress")]
    if not active:
        raise AutoscalingClientError(
            "ActiveInstanceRefreshNotFound",
            f"No in progress or pending Instance Refresh found for {name}",
        )
    active[0]["Status"] = "Cancelling"
    return ActionResult({"InstanceRefreshId": active[0]["InstanceRefreshId"]})


def _lifecycle_hook_model() -> Any:
    from moto.autoscaling.models import autoscaling_backends
    from moto.core.common_models import CloudFormationModel

    class LifecycleHookResource(CloudFormationModel):
        __module__ = "moto.autoscaling.models"

        def __init__(self, hook: Any) -> None:
            self.hook = hook

        @staticmethod
        def cloudformation_name_type() -> str:
            return "LifecycleHookName"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::AutoScaling::LifecycleHook"

        @property
        def physical_resource_id(self) -> str:
            return str(self.hook.name)

        @classmethod
        def create_from_cloudformation_json(  # type: ignore[override]
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> Any:
            properties = cloudformation_json["Properties"]
            backend = autoscaling_backends[account_id][region_name]
            hook = backend.create_lifecycle_hook(
                name=properties.get("LifecycleHookName", resource_name),
                as_name=properties["AutoScalingGroupName"],
                transition=properties.get("LifecycleTransition"),
                timeout=int(properties.get("HeartbeatTimeout", 3600)),
                result=properties.get("DefaultResult", "ABANDON"),
            )
            return cls(hook)

        @classmethod
        def delete_from_cloudformation_json(  # type: ignore[override]
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> None:
            properties = cloudformation_json["Properties"]
            autoscaling_backends[account_id][region_name].delete_lifecycle_hook(
                properties["AutoScalingGroupName"], properties.get("LifecycleHookName")
            )

        def delete(self, account_id: str, region_name: str) -> None:
            autoscaling_backends[account_id][region_name].delete_lifecycle_hook(
                self.hook.auto_scaling_group_name, self.hook.name
            )

    return LifecycleHookResource


def _warm_pool_model() -> Any:
    from moto.autoscaling.models import autoscaling_backends
    from moto.core.common_models import CloudFormationModel

    class WarmPoolResource(CloudFormationModel):
        __module__ = "moto.autoscaling.models"

        def __init__(self, group_name: str) -> None:
            self.group_name = group_name

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::AutoScaling::WarmPool"

        @property
        def physical_resource_id(self) -> str:
            return self.group_name

        @classmethod
        def create_from_cloudformation_json(  # type: ignore[override]
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> Any:
            properties = cloudformation_json["Properties"]
            backend = autoscaling_backends[account_id][region_name]
            prepared = properties.get("MaxGroupPreparedCapacity")
            backend.put_warm_pool(
                group_name=properties["AutoScalingGroupName"],
                max_group_prepared_capacity=None if prepared is None else int(prepared),
                min_size=int(properties.get("MinSize", 0)),
                pool_state=properties.get("PoolState", "Stopped"),
                instance_reuse_policy=properties.get("InstanceReusePolicy"),
            )
            return cls(properties["AutoScalingGroupName"])

        @classmethod
        def update_from_cloudformation_json(  # type: ignore[override]
            cls,
            original_resource: Any,
            new_resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> Any:
            """PutWarmPool with the new settings: a new size needs no replacement
            (AWS::AutoScaling::WarmPool, MaxGroupPreparedCapacity: "No interruption")."""
            return cls.create_from_cloudformation_json(
                new_resource_name, cloudformation_json, account_id, region_name
            )

        @classmethod
        def delete_from_cloudformation_json(  # type: ignore[override]
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> None:
            backend = autoscaling_backends[account_id][region_name]
            _delete_warm_pool(backend, cloudformation_json["Properties"]["AutoScalingGroupName"])

        def delete(self, account_id: str, region_name: str) -> None:
            _delete_warm_pool(autoscaling_backends[account_id][region_name], self.group_name)

    return WarmPoolResource


_MODELS: list[Any] = []
_ORIGINAL: dict[str, Any] = {}


def _register_models() -> None:
    """Make CloudFormation know the two resource types (once per process)."""
    from moto.cloudformation.parsing import get_model_list, get_model_map, get_name_type_map

    if not _MODELS:
        _MODELS.extend([_lifecycle_hook_model(), _warm_pool_model()])
    get_model_list.cache_clear()
    get_model_map.cache_clear()
    get_name_type_map.cache_clear()


def warm_pool_patches() -> list[tuple[Any, str, Any]]:
    """(object, attribute, value) triples that emulate warm pools; apply them with setattr (the
    server) or monkeypatch.setattr (a test). Registers the CloudFormation models as well."""
    from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, InstanceState
    from moto.autoscaling.responses import AutoScalingResponse

    _register_models()
    if not _ORIGINAL:  # moto's own methods, whatever is patched later
        _ORIGINAL.update(
            launch=FakeAutoScalingGroup.replace_autoscaling_group_instances,
            set_desired=FakeAutoScalingGroup.set_desired_capacity,
            put_warm_pool=FakeAutoScalingGroup.put_warm_pool,
            delete_group=AutoScalingBackend.delete_auto_scaling_group,
            describe_groups=AutoScalingResponse.describe_auto_scaling_groups,
            instance_template=InstanceState.launch_template,
        )
    return [
        (FakeAutoScalingGroup, "replace_autoscaling_group_instances", _launch_with_pool),
        (FakeAutoScalingGroup, "set_desired_capacity", _set_desired_and_refill),
        (FakeAutoScalingGroup, "active_instances", _active_instances),
        (FakeAutoScalingGroup, "warm_pool_size", property(_warm_pool_size)),
        (FakeAutoScalingGroup, "put_warm_pool", _put_warm_pool_and_fill),
        (AutoScalingBackend, "delete_auto_scaling_group", _delete_group_and_pool),
        (AutoScalingResponse, "complete_lifecycle_action", _respond_complete_lifecycle_action),
        (AutoScalingResponse, "describe_auto_scaling_groups", _respond_describe_groups),
        (AutoScalingResponse, "describe_warm_pool", _respond_describe_warm_pool),
        (AutoScalingResponse, "delete_warm_pool", _respond_delete_warm_pool),
        (AutoScalingResponse, "describe_scaling_activities", _respond_describe_activities),
        (InstanceState, "launch_template", property(_launched_template)),
        (AutoScalingResponse, "start_instance_refresh", _respond_start_instance_refresh),
        (AutoScalingResponse, "describe_instance_refreshes", _respond_describe_instance_refreshes),
        (AutoScalingResponse, "cancel_instance_refresh", _respond_cancel_instance_refresh),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    log_path: Path, region: str = "us-east-1", env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run this module as a moto server on a free port; yield its URL; stop it in any case.

    `env` adds environment variables to the server's (MOTO_IMAGE_BUILD_OUTCOME and the like).
    """
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port), "--region", region],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {log_path.read_text()}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    apply_patches()
    seed_windows_ami(args.region)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
