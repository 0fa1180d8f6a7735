"""The preflight: every check that would make a deploy fail, before anything is created.

Each finding is ok, warn or BLOCKER; a blocker stops the deploy. `--check` runs only this.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from deployer.capacity import InstanceTypes, slots_per_instance
from deployer.console import DeployError
from deployer.images import ImageSource, image_exists
from deployer.plan import STACK_LAYERS, Plan
from deployer.settings import Context
from deployer.stacks import Stacks

# Service codes of AWS's public region table (SSM /aws/service/global-infrastructure).
REQUIRED_SERVICES = (
    "cloudformation",
    "s3",
    "ec2",
    "ecs",
    "ecr",
    "ssm",
    "logs",
    "autoscaling",
    "mwaa",
)
WINDOWS_AMI_PARAMETER = (
    "/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-ECS_Optimized/image_id"
)
# Service Quotas: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs.
STANDARD_VCPU_QUOTA_CODE = "L-1216C47A"
# All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests, in vCPUs.
SPOT_VCPU_QUOTA_CODE = "L-34B43A08"
# The families the Standard quotas count (their names start with one of these letters).
STANDARD_FAMILIES = "acdhimrtz"

OK, WARN, BLOCKER = "ok", "warn", "BLOCKER"


def service_parameter(service: str, region: str) -> str:
    return f"/aws/service/global-infrastructure/services/{service}/regions/{region}"


@dataclass(frozen=True)
class Finding:
    check: str
    state: str
    detail: str


class Preflight:
    def __init__(
        self, ctx: Context, stacks: Stacks, plan: Plan, *, types: InstanceTypes, image: ImageSource
    ) -> None:
        self.ctx = ctx
        self.stacks = stacks
        self.plan = plan
        self.types = types
        self.image = image
        self.findings: list[Finding] = []

    def report(self, check: str, state: str, detail: str) -> None:
        self.findings.append(Finding(check=check, state=state, detail=detail))

    @property
    def blockers(self) -> int:
        return sum(finding.state == BLOCKER for finding in self.findings)

    def run(self) -> None:
        """Every check, then the table; DeployError when a blocker was found."""
        ctx = self.ctx
        with ctx.console.step("Preflight (changes nothing)") as step:
            self.report("credentials", OK, f"{ctx.caller.arn} (account {ctx.caller.account})")
            self.check_region()
            self.check_instance_types()
            self.check_image_builder()
            self.check_vcpu_quota()
            self.check_stacks()
            self.check_image()
            self.check_baked_ami()
            ctx.console.table(
                ("check", "state", "detail"),
                [(f.check, f.state, f.detail) for f in self.findings],
            )
            step.result = f"{self.blockers} blocker(s)" if self.blockers else "ok"
        if self.blockers:
            raise DeployError(f"preflight: {self.blockers} blocker(s) above; nothing was changed")

    def check_region(self) -> None:
        region = self.ctx.aws.region
        ssm = self.ctx.aws.client("ssm")
        # GetParameters takes up to 10 names: the AMI and the nine services.
        names = [WINDOWS_AMI_PARAMETER] + [service_parameter(s, region) for s in REQUIRED_SERVICES]
        invalid = set(ssm.get_parameters(Names=names)["InvalidParameters"])
        missing = [s for s in REQUIRED_SERVICES if service_parameter(s, region) in invalid]
        if missing:
            working = " ".join(self.regions_offering_all())
            self.report(
                f"region {region}",
                BLOCKER,
                f"does not offer {' '.join(missing)}; use one of: {working}",
            )
        else:
            self.report(f"region {region}", OK, f"offers {' '.join(REQUIRED_SERVICES)}")
        if WINDOWS_AMI_PARAMETER in invalid:
            self.report(
                "Windows Server 2022 ECS AMI",
                BLOCKER,
                f"not published in {region} ({WINDOWS_AMI_PARAMETER}); choose another region",
            )
        else:
            self.report(
                "Windows Server 2022 ECS AMI",
                OK,
                f"published in {region} (hosts and the image build host)",
            )

    def regions_offering_all(self) -> list[str]:
        """Regions that offer every required service, from AWS's public region table."""
        ssm = self.ctx.aws.client("ssm")
        common: set[str] | None = None
        for service in REQUIRED_SERVICES:
            regions = {
                parameter["Value"]
                for page in ssm.get_paginator("get_parameters_by_path").paginate(
                    Path=f"/aws/service/global-infrastructure/services/{service}/regions"
                )
                for parameter in page["Parameters"]
            }
            common = regions if common is None else common & regions
        return sorted(common or ())

    def _slots(self) -> str:
        options = self.plan.options
        return slots_per_instance(
            self.types,
            self.plan.capacity,
            region=self.ctx.aws.region,
            task_cpu=options.task_cpu,
            task_memory_mib=options.task_memory_mib,
            reserved_memory_mib=options.reserved_memory_mib,
            given=options.slots_per_instance,
        ).detail

    def check_instance_types(self) -> None:
        try:
            detail = self._slots()
        except DeployError as problem:
            self.report(
                "instance types", BLOCKER, f"{problem}; choose --instance-types of one x86_64 size"
            )
            return
        self.report("instance types", OK, f"{self.plan.capacity.describe()}: {detail}")

    def check_image_builder(self) -> None:
        if not self.plan.baking:
            return
        region = self.ctx.aws.region
        name = service_parameter("imagebuilder", region)
        invalid = self.ctx.aws.client("ssm").get_parameters(Names=[name])["InvalidParameters"]
        if name in invalid:
            self.report(
                "EC2 Image Builder", BLOCKER, f"not offered in {region}; deploy with --no-bake-ami"
            )
        else:
            self.report("EC2 Image Builder", OK, f"offered in {region} (bakes the AMI)")

    def _vcpu_quota(self, *, name: str, code: str, needed: int, what: str, lower: str) -> None:
        try:
            quota = int(
                self.ctx.aws.client("service-quotas").get_service_quota(
                    ServiceCode="ec2", QuotaCode=code
                )["Quota"]["Value"]
            )
        except (ClientError, KeyError, ValueError):
            self.report(
                name, WARN, f"could not read quota {code} (Service Quotas); {needed} vCPUs needed"
            )
            return
        if quota < needed:
            self.report(
                name,
                BLOCKER,
                f"{quota} vCPUs ({code}) < {needed} needed ({what}); {lower} or request an "
                f"increase of {code} in Service Quotas",
            )
        else:
            self.report(name, OK, f"{quota} vCPUs ({code}) >= {needed} needed ({what})")

    def check_vcpu_quota(self) -> None:
        capacity = self.plan.capacity
        first = capacity.instance_types[0]
        described = self.types.get(first)
        if described is None:
            self.report("vCPU quota", BLOCKER, f"{first} is not offered in {self.ctx.aws.region}")
            return
        builder = described.vcpus if self.plan.options.build_image else 0
        needed = capacity.on_demand_instances * described.vcpus + builder
        spot_needed = capacity.spot_instances * described.vcpus
        if first[0] not in STANDARD_FAMILIES:
            self.report(
                "vCPU quota",
                WARN,
                f"{first} is not a Standard family; check its vCPU quotas yourself ({needed} "
                f"On-Demand, {spot_needed} Spot)",
            )
            return
        self._vcpu_quota(
            name="vCPU quota",
            code=STANDARD_VCPU_QUOTA_CODE,
            needed=needed,
            what=f"{capacity.on_demand_instances} x {first} On-Demand",
            lower="lower --max-instances or --on-demand-base",
        )
        if capacity.spot_instances > 0:
            # Spot launches beyond it fail (MaxSpotInstanceCountExceeded) and the group does
            # not launch On-Demand instead: scale_out would wait for instances that never come.
            self._vcpu_quota(
                name="Spot vCPU quota",
                code=SPOT_VCPU_QUOTA_CODE,
                needed=spot_needed,
                what=f"{capacity.spot_instances} x {first} Spot",
                lower="lower --max-instances, raise --on-demand-base",
            )

    def check_stacks(self) -> None:
        listed = self.stacks.statuses()
        for layer in STACK_LAYERS:
            stack = self.ctx.stack_name(layer)
            status = listed.get(stack, "NONE")
            if status == "NONE":
                self.report(f"stack {stack}", OK, "not created yet")
            elif status == "ROLLBACK_COMPLETE":
                self.report(
                    f"stack {stack}",
                    WARN,
                    "ROLLBACK_COMPLETE: deploy deletes and recreates it (asks first; --yes)",
                )
            elif status.endswith("_IN_PROGRESS"):
                self.report(f"stack {stack}", BLOCKER, f"{status}: wait until it finishes")
            elif status.endswith("_FAILED"):
                self.report(
                    f"stack {stack}", BLOCKER, f"{status}: see its events; fix or delete it"
                )
            else:
                self.report(f"stack {stack}", OK, status)

    def check_image(self) -> None:
        options = self.plan.options
        image = f"{self.image.repository}:{self.image.tag}"
        if options.image_uri:
            self.report("image", OK, f"--image-uri {options.image_uri}")
        elif image_exists(self.ctx.aws.client("ecr"), self.image.repository, self.image.tag):
            self.report("image", OK, f"{image} (built from the current docker/)")
        elif options.build_image:
            self.report("image", OK, f"{image} will be built (--build-image)")
        elif self.plan.skipped("ecs"):
            self.report("image", OK, "ECS stack skipped")
        else:
            self.report(
                "image",
                BLOCKER,
                f"no image {image} built from the current docker/; add --build-image (builds it "
                "on AWS) or --image-uri URI",
            )

    def check_baked_ami(self) -> None:
        stack = self.ctx.stack_name("ami")
        image = f"{self.image.repository}:{self.image.tag}"
        if not self.plan.baking:
            if self.plan.options.bake_ami is False and self.stacks.describe(stack) is not None:
                self.report(
                    "baked AMI",
                    OK,
                    f"--no-bake-ami: back to the public AMI; {stack}, its AMIs and snapshots "
                    "will be removed",
                )
            else:
                self.report(
                    "baked AMI",
                    OK,
                    "not used: instances boot the public ECS-optimized AMI (--bake-ami bakes one)",
                )
            return
        baked_uri = self.stacks.optional_output(stack, "BakedImageUri") or ""
        if baked_uri.endswith(f":{self.image.tag}"):
            ami = self.stacks.output(stack, "BakedAmiId")
            self.report("baked AMI", OK, f"{ami} has {image} (EC2 Fast Launch)")
        else:
            self.report(
                "baked AMI",
                OK,
                f"{image} will be baked by EC2 Image Builder, then EC2 Fast Launch (about an hour)",
            )
