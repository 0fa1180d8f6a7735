"""The deploy: preflight, then the stacks in order, each fed the outputs of the ones before.

storage -> network -> image (and the image builds) -> ami (with --bake-ami) -> ecs -> one
study stack per study -> the uploads -> mwaa -> the stacks of studies no longer in
dags/studies/ deleted. The graph is a line with work between its stacks (builds, a bake,
uploads whose object versions MWAA takes), so it is written out here rather than declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deployer import ami, uploads, warm_pool
from deployer import studies as studies_module
from deployer.capacity import (
    InstanceTypes,
    check_types,
    resolve_capacity,
    sizes_parameter,
    study_fit,
)
from deployer.console import DeployError
from deployer.images import SOURCE_KEY, build_images, image_exists, new_run_id
from deployer.plan import DeployOptions, Plan
from deployer.preflight import Preflight
from deployer.settings import Context
from deployer.stacks import Stacks


def repository_name(prefix: str) -> str:
    """The deployment's one ECR repository: the base image and every study image."""
    return f"{prefix}/images"


def resolve_plan(ctx: Context, stacks: Stacks, options: DeployOptions) -> Plan:
    """The options completed from the stacks (kept capacity, kept AMI choice) and the studies
    of dags/studies/ with their images."""
    ecs_stack = ctx.stack_name("ecs")
    notes: list[str] = []
    keeps_capacity = None in (
        options.instance_types,
        options.purchase_option,
        options.on_demand_base,
        options.warm_pool,
    )
    capacity = resolve_capacity(
        ecs_stack=stacks.describe(ecs_stack) if keeps_capacity else None,
        stack_name=ecs_stack,
        instance_types=options.instance_types,
        purchase_option=options.purchase_option,
        on_demand_base=options.on_demand_base,
        max_instances=options.max_instances,
        notes=notes,
        warm_pool=options.warm_pool,
    )
    for note in notes:
        ctx.console.info(note)
    ami_stack = ctx.stack_name("ami")
    baking = (
        options.bake_ami if options.bake_ami is not None else stacks.describe(ami_stack) is not None
    )
    studies = studies_module.resolve(
        ctx.project, repository=repository_name(ctx.prefix), image_uris=options.image_uris
    )
    return Plan(
        options=options, capacity=capacity, baking=baking, run=new_run_id(), studies=studies
    )


def deploy(ctx: Context, options: DeployOptions) -> None:
    stacks = Stacks(ctx)
    plan = resolve_plan(ctx, stacks, options)
    types = InstanceTypes(ctx.aws.client("ec2"))
    Preflight(ctx, stacks, plan, types=types).run()
    if options.check_only:
        return

    storage, network = ctx.stack_name("storage"), ctx.stack_name("network")
    if not plan.skipped("storage"):
        stacks.deploy("storage", {})
    mwaa_bucket = stacks.output(storage, "MwaaBucketName")
    results_bucket = stacks.output(storage, "ResultsBucketName")

    if not plan.skipped("network"):
        stacks.deploy(
            "network",
            {"NatGatewayCount": str(options.nat_gateways), "RdpCidr": options.rdp_cidr},
        )
    subnets = stacks.output(network, "PrivateSubnetIds")
    instance_sg = stacks.output(network, "EcsInstanceSecurityGroupId")

    if not plan.skipped("image"):
        stacks.deploy(
            "image",
            {
                "RepositoryName": repository_name(ctx.prefix),
                "LifecyclePolicyText": (
                    studies_module.lifecycle_policy(plan.studies.image_names())
                    if plan.studies.sources
                    else ""
                ),
                "SourceBucketName": mwaa_bucket,
                "SourceObjectKey": SOURCE_KEY,
                "BuilderSecurityGroupId": instance_sg,
            },
        )
    images = Images()
    if plan.needs_images:
        images = ensure_images(
            ctx, stacks, plan, mwaa_bucket=mwaa_bucket, subnet=subnets.split(",", maxsplit=1)[0]
        )

    if not plan.skipped("ecs"):
        deploy_compute(ctx, stacks, plan, images=images, subnets=subnets, instance_sg=instance_sg)

    if not plan.skipped("studies"):
        deploy_studies(ctx, stacks, plan, types=types, images=images, results_bucket=results_bucket)

    deploy_airflow(
        ctx,
        stacks,
        plan,
        types=types,
        mwaa_bucket=mwaa_bucket,
        results_bucket=results_bucket,
        subnets=subnets,
    )
    if not plan.skipped("studies"):
        remove_studies(ctx, stacks, plan)
    if not plan.skipped("mwaa"):
        print_next_steps(
            ctx, plan, environment=stacks.output(ctx.stack_name("mwaa"), "EnvironmentName")
        )


def deploy_airflow(
    ctx: Context,
    stacks: Stacks,
    plan: Plan,
    *,
    types: InstanceTypes,
    mwaa_bucket: str,
    results_bucket: str,
    subnets: str,
) -> None:
    """dags/ (the studies included), the requirements and plugins.zip, then the MWAA stack
    pointed at their object versions."""
    if not plan.skipped("upload"):
        uploads.upload(ctx, bucket=mwaa_bucket)
    if plan.skipped("mwaa"):
        if not plan.skipped("upload"):
            uploads.versions(ctx, bucket=mwaa_bucket)
        ctx.console.log("MWAA skipped (--skip mwaa)")
        return
    deploy_mwaa(
        ctx,
        stacks,
        plan,
        types=types,
        versions=uploads.versions(ctx, bucket=mwaa_bucket),
        mwaa_bucket=mwaa_bucket,
        results_bucket=results_bucket,
        subnets=subnets,
    )


@dataclass(frozen=True)
class Images:
    """The repository the images built here are in, and each study's image URI."""

    repository_uri: str | None = None
    by_study: dict[str, str] = field(default_factory=dict)


def ensure_images(
    ctx: Context, stacks: Stacks, plan: Plan, *, mwaa_bucket: str, subnet: str
) -> Images:
    """Each study's image URI; the images built here are built first (--build-image) or must
    exist: a task definition never points at an image that does not (the preflight refused)."""
    studies = plan.studies
    repository_uri = None
    if studies.sources:
        image_stack = ctx.stack_name("image")
        repository_uri = stacks.output(image_stack, "RepositoryUri")
        if plan.options.build_image:
            build_images(
                ctx,
                stacks,
                sources=studies.sources,
                repository_uri=repository_uri,
                bucket=mwaa_bucket,
                subnet=subnet,
                run=plan.run,
            )
        else:
            ecr = ctx.aws.client("ecr")
            for source in studies.sources:
                if not image_exists(ecr, source.repository, source.tag):
                    raise DeployError(
                        f"no image {source.ref}; add --build-image or --image-uri STUDY=URI"
                    )
    return Images(
        repository_uri=repository_uri,
        by_study={study.name: study.image_uri(repository_uri) for study in studies.studies},
    )


def deploy_compute(
    ctx: Context,
    stacks: Stacks,
    plan: Plan,
    *,
    images: Images,
    subnets: str,
    instance_sg: str,
) -> None:
    """The baked AMI, the ECS stack (and a refresh of its warm pool), then AMIs no longer
    used."""
    options = plan.options
    baked_ami = ""
    ami_stack = ctx.stack_name("ami")
    fast_launch = ami.FastLaunchSize.for_group(options.max_instances)
    if plan.baking:
        if not plan.skipped("ami"):
            ami.deploy_ami_stack(
                ctx,
                stacks,
                image_uris=plan.studies.image_uris(images.repository_uri),
                subnet=subnets.split(",", maxsplit=1)[0],
                security_group=instance_sg,
                fast_launch=fast_launch,
            )
        baked_ami = stacks.output(ami_stack, "BakedAmiId")
        ami.refresh_fast_launch(ctx, stacks, ami=baked_ami, size=fast_launch)
    stacks.deploy(
        "ecs",
        {
            **plan.capacity.ecs_parameters(),
            "ReservedMemoryInMiB": str(options.reserved_memory_mib),
            "PrivateSubnetIds": subnets,
            "InstanceSecurityGroupId": instance_sg,
            "BakedAmiId": baked_ami,
        },
    )
    # The pool's instances keep the launch template they were launched from.
    warm_pool.refresh_stale_pool(ctx, stacks)
    if plan.baking:
        # AMIs of earlier image sets: no launch template uses them any more.
        ami.remove_baked_amis(ctx, stack=ami_stack, keep=baked_ami)
    elif options.bake_ami is False:
        ami.remove_ami_stack(ctx, stacks)


def deploy_studies(
    ctx: Context,
    stacks: Stacks,
    plan: Plan,
    *,
    types: InstanceTypes,
    images: Images,
    results_bucket: str,
) -> None:
    """One stack per study (cloudformation/study.yaml): its task definition and task role."""
    ecs = ctx.stack_name("ecs")
    log_group = stacks.output(ecs, "LogGroupName")
    execution_role = stacks.output(ecs, "TaskExecutionRoleArn")
    described = check_types(types, plan.capacity, region=ctx.aws.region)
    for study in plan.studies.studies:
        fit = study_fit(
            described,
            study=study.name,
            cpu=study.info.cpu,
            memory_mib=study.info.memory_mib,
            reserved_memory_mib=plan.options.reserved_memory_mib,
        )
        ctx.console.info(f"study {study.name}: {fit.detail}")
        stacks.deploy(
            "study",
            studies_module.stack_parameters(
                study,
                prefix=ctx.prefix,
                image_uri=images.by_study[study.name],
                results_bucket=results_bucket,
                log_group=log_group,
                execution_role_arn=execution_role,
            ),
            stack=study.stack(ctx.prefix),
            tags=studies_module.stack_tags(ctx.prefix, study.name),
        )


def remove_studies(ctx: Context, stacks: Stacks, plan: Plan) -> None:
    """The stacks of studies no longer in dags/studies/ (found by their tags); their results
    stay in the results bucket."""
    deployed = studies_module.deployed(stacks.listed(), ctx.prefix)
    for study, stack in sorted(deployed.items()):
        if study in plan.studies.names:
            continue
        with ctx.console.step(
            f"Remove {stack} (study {study} is no longer in dags/studies/; its results stay)"
        ) as step:
            stacks.delete(stack)
            step.result = "deleted"


def deploy_mwaa(
    ctx: Context,
    stacks: Stacks,
    plan: Plan,
    *,
    types: InstanceTypes,
    versions: uploads.Versions,
    mwaa_bucket: str,
    results_bucket: str,
    subnets: str,
) -> None:
    options = plan.options
    ecs = ctx.stack_name("ecs")
    network = ctx.stack_name("network")
    parameters = {
        "InstanceBootSeconds": str(plan.boot_s),
        "ImagePullSeconds": str(plan.pull_s),
        "EnvironmentClass": options.environment_class,
        "WebserverAccessMode": options.webserver_access,
        "MwaaBucketName": mwaa_bucket,
        "RequirementsS3Path": uploads.REQUIREMENTS_KEY,
        "RequirementsS3ObjectVersion": versions.requirements,
        "PrivateSubnetIds": subnets,
        "SecurityGroupId": stacks.output(network, "MwaaSecurityGroupId"),
        "ResultsBucketName": results_bucket,
        "MaxClusterSize": str(options.max_instances),
        "TaskFamilyPrefix": studies_module.family_prefix(ctx.prefix),
    }
    for name in (
        "ClusterName",
        "AutoScalingGroupName",
        "LogGroupName",
        "InstanceTypes",
        "ReservedMemoryInMiB",
        "PurchaseOption",
        "OnDemandBaseCapacity",
        "TaskExecutionRoleArn",
    ):
        parameters[name] = stacks.output(ecs, name)
    # The pool the DAGs report and price (windows_batch.warm_pool_size, root_volume_gib); an ECS
    # stack from before the pool has neither output, and MWAA keeps its values.
    for name in ("WarmPoolSize", "RootVolumeSizeInGiB"):
        value = stacks.optional_output(ecs, name)
        if value is not None:
            parameters[name] = value
    # The DAGs size each study's concurrency from the types' vCPUs and memory, as EC2 has them.
    described = [types.get(name) for name in parameters["InstanceTypes"].split(",")]
    parameters["InstanceSizes"] = sizes_parameter([t for t in described if t is not None])
    if versions.plugins is not None:
        parameters |= {
            "PluginsS3Path": uploads.PLUGINS_KEY,
            "PluginsS3ObjectVersion": versions.plugins,
        }
    stacks.deploy("mwaa", parameters)


def print_next_steps(ctx: Context, plan: Plan, *, environment: str) -> None:
    url = ctx.aws.client("mwaa").get_environment(Name=environment)["Environment"]["WebserverUrl"]
    region = ctx.aws.region
    dags = ", ".join(study.info.dag_id for study in plan.studies.studies)
    dag_id = plan.studies.studies[0].info.dag_id
    print(
        f"""
Airflow UI: https://{url}
To run a study: open the UI, unpause its DAG ({dags}) and use "Trigger DAG w/ config".
From the command line (AWS CLI v2), e.g. {dag_id} with its form's defaults:
  aws mwaa invoke-rest-api --region {region} --name {environment} --method PATCH \\
    --path /dags/{dag_id} --body '{{"is_paused": false}}'
  aws mwaa invoke-rest-api --region {region} --name {environment} --method POST \\
    --path /dags/{dag_id}/dagRuns --body '{{"logical_date": null, "conf": {{}}}}'""",
        file=ctx.console.out,
    )
