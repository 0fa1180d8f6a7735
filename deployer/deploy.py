"""The deploy: preflight, then the stacks in order, each fed the outputs of the ones before.

storage -> network -> image (and the image build) -> ami (with --bake-ami) -> ecs -> the
uploads -> mwaa. The graph is a line with work between its stacks (a build, a bake, uploads
whose object versions MWAA takes), so it is written out here rather than declared.
"""

from __future__ import annotations

from deployer import ami, uploads
from deployer.capacity import InstanceTypes, resolve_capacity, slots_per_instance
from deployer.console import DeployError
from deployer.images import (
    SOURCE_KEY,
    ImageSource,
    build_on_windows_host,
    image_exists,
    new_run_id,
    source_tag,
)
from deployer.plan import DeployOptions, Plan
from deployer.preflight import Preflight
from deployer.settings import Context
from deployer.stacks import Stacks

DAG_ID = "windows-batch-compute-dag"
# The DAG's estimate (windows_batch.boot_s / pull_s, cost.py). Without a baked AMI: cost.py's
# defaults. AWS says a Windows launch takes "15 minutes or longer" and Fast Launch launches "up
# to 65% faster" (EC2 User Guide, EC2 Fast Launch): 900 s x 0.35. The baked AMI has the image in
# Docker's cache and the agent's prefer-cached pull behaviour uses it: no pull.
PUBLIC_AMI_BOOT_S = 900
PUBLIC_AMI_PULL_S = 300
BAKED_AMI_BOOT_S = 315
BAKED_AMI_PULL_S = 0


def resolve_plan(ctx: Context, stacks: Stacks, options: DeployOptions) -> Plan:
    """The options completed from the stacks: kept capacity, kept AMI choice."""
    ecs_stack = ctx.stack_name("ecs")
    notes: list[str] = []
    keeps_capacity = None in (
        options.instance_types,
        options.purchase_option,
        options.on_demand_base,
    )
    capacity = resolve_capacity(
        ecs_stack=stacks.describe(ecs_stack) if keeps_capacity else None,
        stack_name=ecs_stack,
        instance_types=options.instance_types,
        purchase_option=options.purchase_option,
        on_demand_base=options.on_demand_base,
        max_instances=options.max_instances,
        notes=notes,
    )
    for note in notes:
        ctx.console.info(note)
    ami_stack = ctx.stack_name("ami")
    baking = (
        options.bake_ami if options.bake_ami is not None else stacks.describe(ami_stack) is not None
    )
    if baking and options.image_uri:
        raise DeployError(
            f"{ami_stack} bakes the image stack's image; --image-uri needs --no-bake-ami"
        )
    return Plan(options=options, capacity=capacity, baking=baking, run=new_run_id())


def deploy(ctx: Context, options: DeployOptions) -> None:
    stacks = Stacks(ctx)
    plan = resolve_plan(ctx, stacks, options)
    types = InstanceTypes(ctx.aws.client("ec2"))
    image = ImageSource(
        directory=ctx.project.docker,
        repository=f"{ctx.prefix}/bersim",
        tag=source_tag(ctx.project.docker),
    )
    Preflight(ctx, stacks, plan, types=types, image=image).run()
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
                "RepositoryName": image.repository,
                "SourceBucketName": mwaa_bucket,
                "SourceObjectKey": SOURCE_KEY,
                "BuilderSecurityGroupId": instance_sg,
            },
        )

    if not plan.skipped("ecs"):
        deploy_compute(
            ctx,
            stacks,
            plan,
            types=types,
            image=image,
            mwaa_bucket=mwaa_bucket,
            results_bucket=results_bucket,
            subnets=subnets,
            instance_sg=instance_sg,
        )

    if not plan.skipped("upload"):
        uploads.upload(ctx, bucket=mwaa_bucket)
    if plan.skipped("mwaa"):
        if not plan.skipped("upload"):
            uploads.versions(ctx, bucket=mwaa_bucket)
        ctx.console.log("MWAA skipped (--skip mwaa); nothing else to do")
        return
    versions = uploads.versions(ctx, bucket=mwaa_bucket)
    deploy_mwaa(
        ctx,
        stacks,
        plan,
        versions=versions,
        mwaa_bucket=mwaa_bucket,
        results_bucket=results_bucket,
        subnets=subnets,
    )
    print_next_steps(ctx, environment=stacks.output(ctx.stack_name("mwaa"), "EnvironmentName"))


def deploy_compute(
    ctx: Context,
    stacks: Stacks,
    plan: Plan,
    *,
    types: InstanceTypes,
    image: ImageSource,
    mwaa_bucket: str,
    results_bucket: str,
    subnets: str,
    instance_sg: str,
) -> None:
    """The image (built or found), the baked AMI, the ECS stack, then AMIs no longer used."""
    options = plan.options
    image_stack = ctx.stack_name("image")
    repository_uri = stacks.output(image_stack, "RepositoryUri")
    # Never point the task definition at an image that does not exist (preflight refused that).
    if options.image_uri:
        image_parameters = {"ImageUri": options.image_uri}
    else:
        if options.build_image:
            build_on_windows_host(
                ctx,
                stacks,
                source=image,
                repository_uri=repository_uri,
                bucket=mwaa_bucket,
                subnet=subnets.split(",", maxsplit=1)[0],
                run=plan.run,
            )
        elif not image_exists(ctx.aws.client("ecr"), image.repository, image.tag):
            raise DeployError(
                f"no image {image.repository}:{image.tag}; add --build-image or --image-uri URI"
            )
        image_parameters = {"ImageTag": image.tag, "ImageUri": ""}
    baked_ami = ""
    ami_stack = ctx.stack_name("ami")
    if plan.baking:
        if not plan.skipped("ami"):
            ami.deploy_ami_stack(
                ctx,
                stacks,
                repository_uri=repository_uri,
                repository=stacks.output(image_stack, "RepositoryName"),
                tag=image.tag,
                subnet=subnets.split(",", maxsplit=1)[0],
                security_group=instance_sg,
            )
        baked_ami = stacks.output(ami_stack, "BakedAmiId")
        ami.refresh_fast_launch(ctx, stacks, ami=baked_ami)
    slots = slots_per_instance(
        types,
        plan.capacity,
        region=ctx.aws.region,
        task_cpu=options.task_cpu,
        task_memory_mib=options.task_memory_mib,
        reserved_memory_mib=options.reserved_memory_mib,
        given=options.slots_per_instance,
    )
    ctx.console.info(f"tasks per instance: {slots.detail}")
    stacks.deploy(
        "ecs",
        {
            **plan.capacity.ecs_parameters(),
            "TaskCpu": str(options.task_cpu),
            "TaskMemoryInMiB": str(options.task_memory_mib),
            "ReservedMemoryInMiB": str(options.reserved_memory_mib),
            "SlotsPerInstance": str(slots.per_instance),
            "PrivateSubnetIds": subnets,
            "InstanceSecurityGroupId": instance_sg,
            "ResultsBucketName": results_bucket,
            "RepositoryUri": repository_uri,
            "BakedAmiId": baked_ami,
            **image_parameters,
        },
    )
    if plan.baking:
        # AMIs of earlier tags: no launch template uses them any more.
        ami.remove_baked_amis(ctx, stack=ami_stack, keep=baked_ami)
    elif options.bake_ami is False:
        ami.remove_ami_stack(ctx, stacks)


def deploy_mwaa(
    ctx: Context,
    stacks: Stacks,
    plan: Plan,
    *,
    versions: uploads.Versions,
    mwaa_bucket: str,
    results_bucket: str,
    subnets: str,
) -> None:
    options = plan.options
    ecs = ctx.stack_name("ecs")
    network = ctx.stack_name("network")
    boot_s, pull_s = (
        (BAKED_AMI_BOOT_S, BAKED_AMI_PULL_S)
        if plan.baking
        else (PUBLIC_AMI_BOOT_S, PUBLIC_AMI_PULL_S)
    )
    parameters = {
        "InstanceBootSeconds": str(boot_s),
        "ImagePullSeconds": str(pull_s),
        "EnvironmentClass": options.environment_class,
        "WebserverAccessMode": options.webserver_access,
        "MwaaBucketName": mwaa_bucket,
        "RequirementsS3Path": uploads.REQUIREMENTS_KEY,
        "RequirementsS3ObjectVersion": versions.requirements,
        "PrivateSubnetIds": subnets,
        "SecurityGroupId": stacks.output(network, "MwaaSecurityGroupId"),
        "ResultsBucketName": results_bucket,
        "MaxClusterSize": str(options.max_instances),
    }
    for parameter, output in (
        ("ClusterName", "ClusterName"),
        ("AutoScalingGroupName", "AutoScalingGroupName"),
        ("TaskDefinitionFamily", "TaskDefinitionFamily"),
        ("ContainerName", "ContainerName"),
        ("LogGroupName", "LogGroupName"),
        ("LogStreamPrefix", "LogStreamPrefix"),
        ("SlotsPerInstance", "SlotsPerInstance"),
        ("InstanceTypes", "InstanceTypes"),
        ("PurchaseOption", "PurchaseOption"),
        ("OnDemandBaseCapacity", "OnDemandBaseCapacity"),
        ("TaskRoleArn", "TaskRoleArn"),
        ("TaskExecutionRoleArn", "TaskExecutionRoleArn"),
    ):
        parameters[parameter] = stacks.output(ecs, output)
    if versions.plugins is not None:
        parameters |= {
            "PluginsS3Path": uploads.PLUGINS_KEY,
            "PluginsS3ObjectVersion": versions.plugins,
        }
    stacks.deploy("mwaa", parameters)


def print_next_steps(ctx: Context, *, environment: str) -> None:
    url = ctx.aws.client("mwaa").get_environment(Name=environment)["Environment"]["WebserverUrl"]
    region = ctx.aws.region
    print(
        f"""
Airflow UI: https://{url}
To run a study: open the UI, unpause {DAG_ID} and use "Trigger DAG w/ config".
From the command line (AWS CLI v2):
  aws mwaa invoke-rest-api --region {region} --name {environment} --method PATCH \\
    --path /dags/{DAG_ID} --body '{{"is_paused": false}}'
  aws mwaa invoke-rest-api --region {region} --name {environment} --method POST \\
    --path /dags/{DAG_ID}/dagRuns --body '{{"logical_date": null, "conf": {{"num_tasks": 20}}}}'""",
        file=ctx.console.out,
    )
