"""The Windows image builds: source tags, the build host's life, the lease between runs.

The moto server simulates the build host (tests/cloudformation/moto_server.py): SendCommand
refuses an instance that is not running, and the build document's invocation ends as
MOTO_IMAGE_BUILD_OUTCOME says, pushing the image on success.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import moto_server  # tests/cloudformation/moto_server.py, loaded by tests/conftest.py
import pytest

from deployer import images, lock
from deployer import studies as studies_module

REPO = Path(__file__).resolve().parents[2]


def shell_digest(directory: Path) -> str:
    """What the shell deploy.sh computed."""
    listing = subprocess.run(
        [
            "bash",
            "-c",
            "find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*'"
            " -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16",
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout.strip()


def test_the_source_digest_is_the_one_the_shell_script_computed(tmp_path: Path) -> None:
    """The digest of a folder's content (the shell deploy.sh's): bytecode, egg-info and the
    order files are found in change nothing."""
    assert images.source_digest(REPO / "docker" / "base") == shell_digest(REPO / "docker" / "base")
    (tmp_path / "B").mkdir()
    (tmp_path / "a" / "__pycache__").mkdir(parents=True)
    (tmp_path / "x.egg-info").mkdir()
    for name in (
        "B/z.txt",
        "a/b.py",
        "a/__pycache__/b.pyc",
        "x.egg-info/PKG-INFO",
        ".hidden",
        "a_",
    ):
        (tmp_path / name).write_text(name)
    assert images.source_digest(tmp_path) == shell_digest(tmp_path)
    before = images.source_digest(tmp_path)
    (tmp_path / "a" / "__pycache__" / "b.pyc").write_text("changed bytecode")
    assert images.source_digest(tmp_path) == before
    (tmp_path / "a" / "b.py").write_text("changed source")
    assert images.source_digest(tmp_path) != before


def test_a_study_image_tag_covers_its_base_so_a_changed_base_rebuilds_it(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    shutil.copytree(REPO / "docker" / "base", docker / "base")
    shutil.copytree(REPO / "docker" / "option_pricing", docker / "option_pricing")

    def tags() -> tuple[str, str]:
        base = images.image_source("base", docker / "base", repository="p/images")
        study = images.image_source(
            "option_pricing", docker / "option_pricing", repository="p/images", parent=base
        )
        return base.tag, study.tag

    base, study = tags()
    assert re.fullmatch(r"base-[0-9a-f]{16}", base)
    assert re.fullmatch(r"option_pricing-[0-9a-f]{16}", study)
    assert tags() == (base, study)
    (docker / "base" / "wbrun" / "runner.py").write_text("# changed\n")
    new_base, new_study = tags()
    assert new_base != base
    assert new_study != study  # its own sources are the same; its base is not
    assert new_study.startswith("option_pricing-")


def base_stacks(deployer: Any) -> str:
    """A prefix with the storage, network and image stacks (what a build needs)."""
    prefix = deployer.prefix()
    result = deployer.deploy("--prefix", prefix, "--skip", "ecs,studies,upload,mwaa")
    assert result.code == 0, result.text
    return prefix


def launch_build_host(deployer: Any, prefix: str, *, run: str) -> str:
    """A build host of another run, as images.build_host launches one."""
    template = deployer.outputs(f"{prefix}-image")["BuilderLaunchTemplateId"]
    subnet = deployer.outputs(f"{prefix}-network")["PrivateSubnetIds"].split(",")[0]
    tags = [
        {"Key": "Name", "Value": f"{prefix}-image-builder"},
        {"Key": images.RUN_TAG, "Value": run},
    ]
    return str(
        deployer.client("ec2").run_instances(
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            SubnetId=subnet,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
    )


def state(deployer: Any, instance: str) -> str:
    described = deployer.client("ec2").describe_instances(InstanceIds=[instance])
    return str(described["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_a_second_deploy_waits_for_the_first_ones_build_and_leaves_its_host_alone(
    two_studies: Any,
) -> None:
    """The review's finding: a second concurrent deploy terminated the first one's build
    host (it terminated every host named <prefix>-image-builder). Now the second waits for
    the first run's lease, and once that run has pushed the images, builds nothing."""
    deployer = two_studies
    prefix = base_stacks(deployer)
    bucket = deployer.outputs(f"{prefix}-storage")["MwaaBucketName"]
    s3 = deployer.client("s3")
    ctx = deployer.context(prefix)
    first = lock.acquire(
        s3, bucket=bucket, key=images.LOCK_KEY, run="run-a", by="someone", lease_s=3600,
        wait_s=1, poll_s=0.01, console=ctx.console,
    )  # fmt: skip
    host = launch_build_host(deployer, prefix, run="run-a")

    console = deployer.console(program="deploy.sh")
    console.progress_every_s = 0.05
    results: list[Any] = []
    second = threading.Thread(
        target=lambda: results.append(
            deployer.run("deploy", "--prefix", prefix, "--skip", "mwaa", "--build-image",
                         console=console, build_poll_s=0.05)
        )
    )  # fmt: skip
    second.start()
    try:
        deadline = time.monotonic() + 30
        assert isinstance(console.out, io.StringIO)
        while "waiting for deploy run run-a" not in console.out.getvalue():
            assert second.is_alive(), results
            assert time.monotonic() < deadline, console.out.getvalue()
            time.sleep(0.05)
        assert state(deployer, host) == "running"
        # The first run pushes its images, terminates its host and releases the lease.
        sources = studies_module.resolve(
            deployer.project, repository=f"{prefix}/images", image_uris=()
        ).sources
        for source in sources:
            deployer.client("ecr").put_image(
                repositoryName=source.repository,
                imageManifest=json.dumps({"schemaVersion": 2, "built": f"run-a {source.tag}"}),
                imageManifestMediaType="application/vnd.docker.distribution.manifest.v2+json",
                imageTag=source.tag,
            )
        deployer.client("ec2").terminate_instances(InstanceIds=[host])
        first.release(ctx.console)
    finally:
        second.join(timeout=60)
    (result,) = results
    assert result.code == 0, result.text
    for source in sources:
        assert f"==> Image {source.ref}: built meanwhile by another run" in result.out
    assert "build host i-" not in result.out
    tiny = next(source for source in sources if source.name == "base")
    assert deployer.outputs(f"{prefix}-study-tiny")["ImageUri"].endswith(f":{tiny.tag}")


def test_a_dead_runs_expired_lease_is_taken_over_and_its_host_terminated(deployer: Any) -> None:
    """A run that died leaves its lease and maybe its host: past the lease's expiry the next
    run takes the lease over (a conditional write on its ETag), terminates that host and
    builds; its own host carries its run's tag."""
    prefix = base_stacks(deployer)
    bucket = deployer.outputs(f"{prefix}-storage")["MwaaBucketName"]
    ctx = deployer.context(prefix)
    lock.acquire(
        deployer.client("s3"), bucket=bucket, key=images.LOCK_KEY, run="run-dead", by="someone",
        lease_s=-1, wait_s=1, poll_s=0.01, console=ctx.console,
    )  # fmt: skip
    leftover = launch_build_host(deployer, prefix, run="run-dead")
    result = deployer.deploy("--prefix", prefix, "--skip", "mwaa", "--build-image")
    assert result.code == 0, result.text
    assert "took over the expired lease of deploy run run-dead" in result.err
    assert f"terminated build host(s) {leftover} left by an earlier run" in result.out
    assert state(deployer, leftover) in ("shutting-down", "terminated")
    own = result.out.split("build host ", 2)[2].split()[0]
    tags = deployer.client("ec2").describe_instances(InstanceIds=[own])["Reservations"][0][
        "Instances"
    ][0]["Tags"]
    run_tags = [tag["Value"] for tag in tags if tag["Key"] == images.RUN_TAG]
    assert run_tags
    assert run_tags[0] != "run-dead"
    assert f"(run {run_tags[0]})" in result.out
    assert deployer.running_instances() == []


def test_two_runs_cannot_both_hold_the_lease(deployer: Any) -> None:
    """If-None-Match: * lets one writer create the object; the other gets 412."""
    prefix = deployer.prefix()
    s3 = deployer.client("s3")
    bucket = f"{prefix}-locks"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ctx = deployer.context(prefix)
    held = lock.acquire(
        s3, bucket=bucket, key="k", run="a", by="x", lease_s=60, wait_s=1, poll_s=0.01,
        console=ctx.console,
    )  # fmt: skip
    with pytest.raises(lock.DeployError, match=r"deploy run a .* still holds s3://"):
        lock.acquire(
            s3, bucket=bucket, key="k", run="b", by="y", lease_s=60, wait_s=0.1, poll_s=0.01,
            console=ctx.console,
        )  # fmt: skip
    held.release(ctx.console)
    # In a versioned bucket the released lease is a delete marker: the key is free again.
    again = lock.acquire(
        s3, bucket=bucket, key="k", run="b", by="y", lease_s=60, wait_s=0.1, poll_s=0.01,
        console=ctx.console,
    )  # fmt: skip
    assert again.holder.run == "b"
    # A release by a run whose lease was taken over leaves the new holder's lease alone.
    held.release(ctx.console)
    assert json.loads(s3.get_object(Bucket=bucket, Key="k")["Body"].read())["run"] == "b"


def test_a_failed_build_prints_the_log_tail_terminates_the_host_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deployer_class: Any
) -> None:
    """The review's finding: temporary files leaked on failure (the shell script left its
    mktemp -d folder of the source zip on every build). Nothing is written to TMPDIR now."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    with moto_server.running_server(
        tmp_path / "server.log", "us-east-1", env={"MOTO_IMAGE_BUILD_OUTCOME": "Failed"}
    ) as url:
        deployer = deployer_class(url)
        prefix = deployer.prefix()
        result = deployer.deploy("--prefix", prefix, "--skip", "mwaa", "--build-image")
        assert result.code == 1, result.text
        assert "ended Failed" in result.err
        tail = result.err.split("last lines of", 1)[1]
        assert moto_server.BUILD_FAILURE_LINE in tail
        assert "Step 59/12" in tail
        assert "Step 1/12 " not in tail  # the tail, not the head
        assert deployer.running_instances() == []
        assert f"{prefix}-ecs" not in deployer.stacks(prefix)
        # The lease is released.
        bucket = deployer.outputs(f"{prefix}-storage")["MwaaBucketName"]
        keys = deployer.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
        assert images.LOCK_KEY not in {item["Key"] for item in keys}
    assert os.listdir(scratch) == []


def test_an_interrupted_build_terminates_its_host_and_releases_the_lease(
    deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM, which the door turns into an exit) while the build runs: the host
    and the lease are cleaned up and the exit code is 130."""
    prefix = base_stacks(deployer)

    def interrupted(*_: Any, **__: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "_send_build_command", interrupted)
    result = deployer.deploy("--prefix", prefix, "--skip", "mwaa", "--build-image")
    assert result.code == 130
    assert "interrupted" in result.err
    host = result.out.split("build host ", 1)[1].split()[0]
    assert f"build host {host} terminated" in result.out
    assert state(deployer, host) in ("shutting-down", "terminated")
    bucket = deployer.outputs(f"{prefix}-storage")["MwaaBucketName"]
    keys = deployer.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    assert images.LOCK_KEY not in {item["Key"] for item in keys}
