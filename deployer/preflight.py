"""The preflight: every check that would make a deploy fail, before anything is created.

Each finding is ok, warn or BLOCKER; a blocker stops the deploy. `--check` runs only this.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from deployer import studies as studies_module
from deployer import warm_pool
from deployer.ami import baked_uris
from deployer.capacity import (
    InstanceType,
    InstanceTypes,
    check_types,
    describe_sizes,
    study_fit,
)
from deployer.console import DeployError
from deployer.images import image_exists
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
    def __init__(self, ctx: Context, stacks: Stacks, plan: Plan, *, types: InstanceTypes) -> None:
        self.ctx = ctx
        self.stacks = stacks
        self.plan = plan
        self.types = types
        self.findings: list[Finding] = []
        # The instance types as EC2 describes them, once they passed their check.
        self.described: list[InstanceType] | None = None
        # {study: stack} of the study stacks that exist, found by their tags.
        self.deployed = studies_module.deployed(stacks.listed(), ctx.prefix)

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
            self.check_warm_pool()
            self.check_studies()
            self.check_image_builder()
            self.check_vcpu_quota()
            self.check_stacks()
            self.check_images()
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

    def check_instance_types(self) -> None:
        try:
            described = check_types(self.types, self.plan.capacity, region=self.ctx.aws.region)
        except DeployError as problem:
            self.report(
                "instance types", BLOCKER, f"{problem}; choose --instance-types of one x86_64 size"
            )
            return
        self.described = described
        self.report(
            "instance types", OK, f"{self.plan.capacity.describe()}: {describe_sizes(described)}"
        )

    def check_warm_pool(self) -> None:
        """--warm-pool: refused with Spot or above --max-instances; else its size and cost."""
        capacity = self.plan.capacity
        stack = self.ctx.stack_name("ecs")
        refused = warm_pool.refusal(capacity=capacity, options=self.plan.options, stack=stack)
        if refused is not None:
            self.report("warm pool", BLOCKER, refused)
            return
        if capacity.warm_pool == 0:
            deployed = warm_pool.deployed_size(self.stacks, stack)
            self.report(
                "warm pool",
                OK,
                f"--warm-pool 0: the pool of {deployed} of {stack} and its instances will go"
                if deployed
                else "none (--warm-pool N keeps N instances stopped, ready to start)",
            )
            return
        self.report(
            "warm pool",
            OK,
            warm_pool.describe_cost(
                capacity=capacity,
                root_volume_gib=warm_pool.root_volume_gib(self.ctx, self.stacks),
                boot_s=self.plan.boot_s,
            ),
        )

    def check_studies(self) -> None:
        """Each study: its DAG, whether its task fits every instance type, its image."""
        reserved = self.plan.options.reserved_memory_mib
        for study in self.plan.studies.studies:
            info = study.info
            image = study.given_uri or (study.source.ref if study.source else "")
            facts = (
                f"DAG {info.dag_id}, image {image} ({study.origin}), results under "
                f"{info.results_prefix}/"
            )
            if self.described is None:
                self.report(f"study {study.name}", OK, facts)
                continue
            try:
                fit = study_fit(
                    self.described,
                    study=study.name,
                    cpu=info.cpu,
                    memory_mib=info.memory_mib,
                    reserved_memory_mib=reserved,
                )
            except DeployError as problem:
                self.report(
                    f"study {study.name}",
                    BLOCKER,
                    f"{problem}; lower cpu or memory_mib in {info.folder.name}/study.yaml or "
                    "choose larger --instance-types",
                )
                continue
            self.report(
                f"study {study.name}",
                OK,
                f"{info.cpu} CPU units, {info.memory_mib} MiB a task: {fit.detail}; {facts}",
            )

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
        what = f"{capacity.on_demand_instances} x {first} On-Demand"
        if capacity.warm_pool:
            # The group and its pool together stay within the larger of the two (capacity.py).
            what += f", the warm pool's {capacity.warm_pool} among them while they start"
        self._vcpu_quota(
            name="vCPU quota",
            code=STANDARD_VCPU_QUOTA_CODE,
            needed=needed,
            what=what,
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
        names = [self.ctx.stack_name(layer) for layer in STACK_LAYERS]
        if not self.plan.skipped("studies"):
            names += [study.stack(self.ctx.prefix) for study in self.plan.studies.studies]
        for stack in names:
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
        if self.plan.skipped("studies"):
            return
        for study, stack in sorted(self.deployed.items()):
            if study not in self.plan.studies.names:
                self.report(
                    f"stack {stack}",
                    OK,
                    f"study {study} is no longer in dags/studies/: deploy deletes this stack "
                    "(its results stay in the results bucket)",
                )

    def check_images(self) -> None:
        """Every image built here must exist, or be built now (--build-image)."""
        if not self.plan.needs_images:
            self.report("images", OK, "not needed (the study stacks and the bake are skipped)")
            return
        ecr = self.ctx.aws.client("ecr")
        for source in self.plan.studies.sources:
            folder = f"docker/{source.directory.name}/"
            if image_exists(ecr, source.repository, source.tag):
                self.report(f"image {source.name}", OK, f"{source.ref} (built from {folder})")
            elif self.plan.options.build_image:
                self.report(
                    f"image {source.name}", OK, f"{source.ref} will be built (--build-image)"
                )
            else:
                self.report(
                    f"image {source.name}",
                    BLOCKER,
                    f"no image {source.ref} built from the current {folder}; add --build-image "
                    "(builds it on AWS) or --image-uri STUDY=URI",
                )

    def check_baked_ami(self) -> None:
        stack = self.ctx.stack_name("ami")
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
        repository_uri = self.stacks.optional_output(self.ctx.stack_name("image"), "RepositoryUri")
        baked = self.stacks.optional_output(stack, "BakedImageUris")
        if baked and (repository_uri or not self.plan.studies.sources):
            planned = baked_uris(self.plan.studies.image_uris(repository_uri))
            if baked == planned:
                ami = self.stacks.output(stack, "BakedAmiId")
                self.report(
                    "baked AMI", OK, f"{ami} has the {len(planned.split(','))} image(s): {planned}"
                )
                return
        self.report(
            "baked AMI",
            OK,
            "every study's image (and the base image) will be baked by EC2 Image Builder, "
            "then EC2 Fast Launch (about an hour)",
        )
