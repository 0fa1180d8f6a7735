"""The deployer in-process against one moto server (tests/cloudformation/moto_server.py).

`deployer` runs `cli.main` as deploy.sh and destroy.sh do, in this process: boto3 clients
pointed at the server, a console that writes to strings, polls of a few milliseconds. Each
test takes its own stack prefix, so the tests share the server and stay independent.
"""

from __future__ import annotations

import io
import itertools
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import moto_server  # tests/cloudformation/moto_server.py, loaded by tests/conftest.py
import pytest

from deployer import cli
from deployer.aws import Aws, Caller, caller
from deployer.console import Console
from deployer.settings import Context, Project, Timing

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
# The engine's own tiny test study (no image of its own: it runs on the base image) and a real
# study with an image of its own (docker/option_pricing/, FROM the base image).
TINY = REPO / "tests" / "workloads" / "studies" / "tiny"
OPTION_PRICING = REPO / "dags" / "studies" / "option_pricing"
FAST = Timing(
    stack_poll_s=0.01,
    change_set_poll_s=0.01,
    stack_timeout_s=60,
    build_poll_s=0.01,
    builder_register_timeout_s=5,
    ami_bake_timeout_s=60,
    fast_launch_poll_s=0.01,
    fast_launch_disable_timeout_s=5,
    drain_timeout_s=5,
    destroy_poll_s=0.01,
)
_prefixes = itertools.count()


def session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def line(self, start: str) -> str:
        """The first output line that starts with `start` (after the indent)."""
        return next(line for line in self.out.splitlines() if line.strip().startswith(start))


class Deployer:
    """deploy.sh and destroy.sh, in process, against one moto server."""

    def __init__(self, url: str, *, project: Project | None = None) -> None:
        self.url = url
        self.project = project or Project(root=REPO)
        # One session: it loads each service's model once.
        self.session = session()

    def aws(self, region: str = REGION) -> Aws:
        return Aws(session=self.session, region=region, endpoint_url=self.url)

    def client(self, service: str, region: str = REGION) -> Any:
        return self.aws(region).client(service)

    def connector(self, region: str | None) -> tuple[Aws, Caller]:
        aws = self.aws(region or REGION)
        return aws, caller(aws)

    def context(self, prefix: str, *, stdin: str = "", assume_yes: bool = False) -> Context:
        aws = self.aws()
        return Context(
            aws=aws,
            caller=caller(aws),
            console=self.console(stdin=stdin, assume_yes=assume_yes),
            project=self.project,
            timing=FAST,
            prefix=prefix,
        )

    @staticmethod
    def console(
        *, stdin: str = "", assume_yes: bool = False, program: str = "deploy.sh"
    ) -> Console:
        return Console(
            program=program,
            out=io.StringIO(),
            err=io.StringIO(),
            stdin=io.StringIO(stdin),
            assume_yes=assume_yes,
        )

    def run(
        self,
        command: str,
        *args: str,
        stdin: str = "",
        console: Console | None = None,
        **timing: float,
    ) -> Result:
        """cli.main as the door runs it; `timing` overrides FAST's polls and deadlines."""
        console = console or self.console(stdin=stdin, program=f"{command}.sh")
        code = cli.main(
            command,
            list(args),
            project=self.project,
            console=console,
            timing=replace(FAST, **timing),
            connector=self.connector,
        )
        assert isinstance(console.out, io.StringIO)
        assert isinstance(console.err, io.StringIO)
        return Result(code=code, out=console.out.getvalue(), err=console.err.getvalue())

    def deploy(self, *args: str, stdin: str = "") -> Result:
        return self.run("deploy", *args, stdin=stdin)

    def destroy(self, *args: str, stdin: str = "") -> Result:
        return self.run("destroy", *args, stdin=stdin)

    def stacks(self, prefix: str, region: str = REGION) -> dict[str, str]:
        cloudformation = self.client("cloudformation", region)
        return {
            stack["StackName"]: stack["StackStatus"]
            for page in cloudformation.get_paginator("describe_stacks").paginate()
            for stack in page["Stacks"]
            if stack["StackName"].startswith(f"{prefix}-")
        }

    def outputs(self, stack: str) -> dict[str, str]:
        described = self.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}

    @staticmethod
    def prefix(stem: str = "wd") -> str:
        """A stack prefix no other test of the session uses."""
        return f"{stem}{next(_prefixes)}"

    def running_instances(self) -> list[dict[str, Any]]:
        pages = (
            self.client("ec2")
            .get_paginator("describe_instances")
            .paginate(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        )
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def scratch_project(root: Path, studies: Mapping[str, Path]) -> Project:
    """A checkout whose dags/studies/ holds these study folders (name -> source folder): the
    real templates, images, engine and plugins, the studies chosen by the test."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("cloudformation", "docker", "plugins", "requirements-mwaa.txt"):
        (root / name).symlink_to(REPO / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "dags", root / "dags", ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", "studies"
    ))  # fmt: skip
    for name, source in studies.items():
        shutil.copytree(source, root / "dags" / "studies" / name, ignore=ignore)
    return Project(root=root)


@pytest.fixture
def two_studies(moto_url: str, tmp_path: Path) -> Deployer:
    """A deployer of a checkout with two studies: tiny (the base image) and option_pricing."""
    project = scratch_project(
        tmp_path / "checkout", {"tiny": TINY, "option_pricing": OPTION_PRICING}
    )
    return Deployer(moto_url, project=project)


@pytest.fixture
def one_study(moto_url: str, tmp_path: Path) -> Deployer:
    """A deployer of a checkout with one study, tiny."""
    return Deployer(moto_url, project=scratch_project(tmp_path / "one-study", {"tiny": TINY}))


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("deployer-moto") / "server.log"
    with moto_server.running_server(log, REGION) as url:
        yield url


@pytest.fixture
def deployer(moto_url: str) -> Deployer:
    return Deployer(moto_url)


@pytest.fixture
def deployer_class() -> type[Deployer]:
    """For a test that starts a moto server of its own."""
    return Deployer
