"""Container images: their source tags, whether ECR has them, and the builds on a Windows host.

One ECR repository holds every image of a deployment: the engine's base image (docker/base/,
tag `base-<hash>`) and each study image built FROM it (docker/<image>/, tag `<image>-<hash>`,
`--build-arg BASE_IMAGE=<repository>:base-<hash>`). A study image's hash covers the base's
tag, so a changed base rebuilds every study image on it.

The images are built on one short-lived Windows Server 2022 instance from the image stack's
launch template, driven by its SSM Run Command document, base first (the later builds find its
layers in the host's Docker cache): each image's sources go to S3 as a zip, the document builds
and pushes, and the instance is terminated whatever happens. One run at a time builds (a lease
in S3, `deployer.lock`); each build host carries its run's ID as a tag, so a run only ever
terminates its own host or the hosts of runs that are gone.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from deployer import lock
from deployer.aws import error_code, wait
from deployer.console import DeployError
from deployer.settings import Context
from deployer.stacks import Stacks
from deployer.uploads import object_version

SOURCE_KEY = "build/docker-source.zip"
LOCK_KEY = "build/build.lock"
RUN_TAG = "windows-batch-compute:deploy-run"
BASE = "base"
# ECR's rule for a tag (PutImage imageTag): at most 128 characters of these.
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_CHARS = 16
# Lines of each build output stream shown when a build fails.
LOG_TAIL_LINES = 40


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def _excluded(relative: str) -> bool:
    return (
        "/__pycache__/" in f"/{relative}" or relative.endswith(".pyc") or ".egg-info/" in relative
    )


def source_files(directory: Path) -> list[Path]:
    """The image's sources: regular files, no bytecode or egg-info, in byte order of path."""
    files = [
        path
        for path in directory.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and not _excluded(path.relative_to(directory).as_posix())
    ]
    return sorted(files, key=lambda path: path.relative_to(directory).as_posix().encode())


def source_digest(directory: Path, *, parent: str | None = None) -> str:
    """A digest of the sources' content (and of the parent image's tag, when there is one):
    the same sources on the same base give the same digest and no rebuild.

    Without a parent, the digest the shell deploy.sh computed (`find . -type f | sort | xargs
    sha256sum | sha256sum`); a parent adds a `FROM <tag>` line to what is hashed.
    """
    listing = "".join(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  "
        f"./{path.relative_to(directory).as_posix()}\n"
        for path in source_files(directory)
    )
    if parent is not None:
        listing += f"FROM {parent}\n"
    return hashlib.sha256(listing.encode()).hexdigest()[:DIGEST_CHARS]


def source_zip(directory: Path) -> bytes:
    """The sources as a zip, in memory: nothing is left on disk when the run fails."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in source_files(directory):
            archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def image_exists(ecr: Any, repository: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ClientError as error:
        if error_code(error) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return False
        raise
    return True


@dataclass(frozen=True)
class ImageSource:
    """One image to build: its sources and where it goes (one ECR repository, many tags)."""

    name: str
    directory: Path
    repository: str
    tag: str
    # The image it is built FROM (the base image), passed as the build argument BASE_IMAGE.
    parent: ImageSource | None = None

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    def uri(self, repository_uri: str) -> str:
        return f"{repository_uri}:{self.tag}"


def image_source(
    name: str, directory: Path, *, repository: str, parent: ImageSource | None = None
) -> ImageSource:
    """The image built from `directory`, tagged `<name>-<digest>`."""
    if not (directory / "Dockerfile").is_file():
        raise DeployError(f"no {directory}/Dockerfile: the image {name} cannot be built")
    tag = f"{name}-{source_digest(directory, parent=parent.tag if parent else None)}"
    if not TAG_PATTERN.match(tag):
        raise DeployError(
            f"docker/{name}/ cannot name an image: its tag {tag} is not an ECR tag (letters, "
            "digits, '_', '.', '-', at most 128 characters)"
        )
    return ImageSource(
        name=name, directory=directory, repository=repository, tag=tag, parent=parent
    )


@dataclass(frozen=True)
class Builder:
    """The image stack's build machinery (its outputs)."""

    launch_template: str
    document: str
    log_group: str
    timeout_s: int
    host_name: str

    @classmethod
    def from_stack(cls, stacks: Stacks, stack: str) -> Builder:
        return cls(
            launch_template=stacks.output(stack, "BuilderLaunchTemplateId"),
            document=stacks.output(stack, "BuildDocumentName"),
            log_group=stacks.output(stack, "BuildLogGroupName"),
            timeout_s=int(stacks.output(stack, "BuildTimeoutInMinutes")) * 60,
            host_name=f"{stack}-builder",
        )


def build_images(
    ctx: Context,
    stacks: Stacks,
    *,
    sources: Sequence[ImageSource],
    repository_uri: str,
    bucket: str,
    subnet: str,
    run: str,
) -> None:
    """Builds every source whose tag does not exist yet, in order (a parent before the images
    FROM it), on one build host; one run builds at a time (the lease)."""
    ecr = ctx.aws.client("ecr")
    missing = [source for source in sources if not image_exists(ecr, source.repository, source.tag)]
    for source in sources:
        if source not in missing:
            with ctx.console.step(f"Image {source.ref}") as step:
                step.result = "already built from these sources"
    if not missing:
        return
    builder = Builder.from_stack(stacks, ctx.stack_name("image"))
    # Past every deadline of the holder (SSM registration, each build, our margin).
    lease_s = ctx.timing.builder_register_timeout_s + len(missing) * builder.timeout_s + 900
    lease = lock.acquire(
        ctx.aws.client("s3"),
        bucket=bucket,
        key=LOCK_KEY,
        run=run,
        by=ctx.caller.arn,
        lease_s=lease_s,
        wait_s=lease_s,
        poll_s=ctx.timing.build_poll_s,
        console=ctx.console,
    )
    try:
        still = []
        for source in missing:
            if image_exists(ecr, source.repository, source.tag):
                with ctx.console.step(f"Image {source.ref}") as step:
                    step.result = "built meanwhile by another run"
            else:
                still.append(source)
        if not still:
            return
        terminate_leftover_builders(ctx, host_name=builder.host_name, run=run)
        with build_host(ctx, builder=builder, subnet=subnet, run=run) as instance:
            for source in still:
                with ctx.console.step(f"Image {source.ref}") as step:
                    _build(
                        ctx,
                        builder=builder,
                        source=source,
                        instance=instance,
                        repository_uri=repository_uri,
                        bucket=bucket,
                    )
                    if not image_exists(ecr, source.repository, source.tag):
                        raise DeployError(
                            f"the build reported success but {source.ref} is not in the "
                            f"repository; see log group {builder.log_group}"
                        )
                    step.result = "built"
    finally:
        lease.release(ctx.console)


def _build(
    ctx: Context,
    *,
    builder: Builder,
    source: ImageSource,
    instance: str,
    repository_uri: str,
    bucket: str,
) -> None:
    """One image on the build host: its sources to S3 (one key, read by version), then the
    build document with the parent image as BASE_IMAGE."""
    s3 = ctx.aws.client("s3")
    s3.put_object(Bucket=bucket, Key=SOURCE_KEY, Body=source_zip(source.directory))
    version = object_version(s3, bucket, SOURCE_KEY)
    command = _send_build_command(
        ctx,
        builder=builder,
        instance=instance,
        parameters={
            "SourceBucket": bucket,
            "SourceKey": SOURCE_KEY,
            "SourceVersion": version,
            "ImageUri": source.uri(repository_uri),
            "BaseImageUri": source.parent.uri(repository_uri) if source.parent else "",
            "TimeoutSeconds": str(builder.timeout_s),
        },
    )
    ssm = ctx.aws.client("ssm")
    try:
        # Run Command stops the script at its own timeout; ours only guards a lost host.
        wait(
            ssm,
            "command_executed",
            delay_s=ctx.timing.build_poll_s,
            timeout_s=builder.timeout_s + 600,
            console=ctx.console,
            progress=lambda: f"build {command} on {instance}: {_status(ssm, command, instance)}",
            CommandId=command,
            InstanceId=instance,
        )
    except WaiterError as error:
        status = _status(ssm, command, instance)
        if "Max attempts exceeded" in str(error.kwargs.get("reason", "")):
            status = f"{status} (gave up waiting)"
        print_build_log_tail(ctx, group=builder.log_group, command=command)
        raise DeployError(
            f"image build {command} of {source.ref} on {instance} ended {status}"
        ) from error


def _status(ssm: Any, command: str, instance: str) -> str:
    try:
        return str(ssm.get_command_invocation(CommandId=command, InstanceId=instance)["Status"])
    except ClientError:
        return "Pending"


@contextmanager
def build_host(ctx: Context, *, builder: Builder, subnet: str, run: str) -> Iterator[str]:
    """A build instance tagged with this run; terminated when the block ends, however."""
    ec2 = ctx.aws.client("ec2")
    tags = [
        # The launch template's own tags, plus the run's.
        {"Key": "Name", "Value": builder.host_name},
        {"Key": "windows-batch-compute:role", "Value": "image-builder"},
        {"Key": RUN_TAG, "Value": run},
    ]
    instance = ec2.run_instances(
        LaunchTemplate={"LaunchTemplateId": builder.launch_template, "Version": "$Latest"},
        SubnetId=subnet,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    ctx.console.info(f"build host {instance} launched (run {run})")
    try:
        yield instance
    finally:
        ec2.terminate_instances(InstanceIds=[instance])
        ctx.console.info(f"build host {instance} terminated")


def terminate_leftover_builders(ctx: Context, *, host_name: str, run: str) -> None:
    """Build hosts of runs that died (the caller holds the lease, so no other run is
    building); they also end themselves after the build timeout."""
    ec2 = ctx.aws.client("ec2")
    leftovers = [
        instance["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag:Name", "Values": [host_name]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
        if {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get(RUN_TAG) != run
    ]
    if leftovers:
        ec2.terminate_instances(InstanceIds=leftovers)
        ctx.console.info(f"terminated build host(s) {', '.join(leftovers)} left by an earlier run")


def _send_build_command(
    ctx: Context, *, builder: Builder, instance: str, parameters: dict[str, str]
) -> str:
    """Sends the build document, retrying while the new host's SSM agent has not registered."""
    ssm = ctx.aws.client("ssm")
    started_s = ctx.console.clock()
    last_progress_s = started_s
    while True:
        try:
            return str(
                ssm.send_command(
                    DocumentName=builder.document,
                    InstanceIds=[instance],
                    Parameters={name: [value] for name, value in parameters.items()},
                    CloudWatchOutputConfig={
                        "CloudWatchOutputEnabled": True,
                        "CloudWatchLogGroupName": builder.log_group,
                    },
                )["Command"]["CommandId"]
            )
        except ClientError as error:
            if error_code(error) != "InvalidInstanceId":
                raise DeployError(f"cannot start the build: {error}") from error
        if ctx.console.clock() - started_s >= ctx.timing.builder_register_timeout_s:
            raise DeployError(
                f"build host {instance} did not register with SSM within "
                f"{ctx.timing.builder_register_timeout_s:.0f} s"
            )
        if ctx.console.clock() - last_progress_s >= ctx.console.progress_every_s:
            ctx.console.progress(
                f"waiting for build host {instance} to boot and register with SSM",
                since_s=started_s,
            )
            last_progress_s = ctx.console.clock()
        time.sleep(ctx.timing.build_poll_s)


def print_build_log_tail(ctx: Context, *, group: str, command: str) -> None:
    """The tail of every output stream (stdout, stderr) the build left in CloudWatch Logs."""
    logs = ctx.aws.client("logs")
    try:
        streams = [
            stream["logStreamName"]
            for page in logs.get_paginator("describe_log_streams").paginate(
                logGroupName=group, logStreamNamePrefix=f"{command}/"
            )
            for stream in page["logStreams"]
        ]
    except ClientError:
        streams = []
    if not streams:
        ctx.console.error(f"the build left no output in log group {group}")
        return
    for stream in streams:
        events = logs.get_log_events(
            logGroupName=group, logStreamName=stream, limit=LOG_TAIL_LINES, startFromHead=False
        )["events"]
        lines = "\n".join(f"    {event['message']}" for event in events)
        ctx.console.error(f"last lines of {group} {stream}:\n{lines}")
