"""Where the project's files are, how long the deployer waits, and the shared run context."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from deployer.aws import Aws, Caller
from deployer.console import Console, DeployError

# Stack names are <prefix>-<layer>; the prefix also names buckets and roles, hence the rule.
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,22}$")
PROJECT_TAG = {"Key": "project", "Value": "windows-batch-compute"}


def validate_prefix(prefix: str) -> None:
    if not PREFIX_PATTERN.match(prefix):
        raise DeployError(
            "--prefix must be lowercase letters, digits and '-', start with a letter, "
            "at most 23 characters"
        )


@dataclass(frozen=True)
class Project:
    """The checkout the deployer reads: templates, DAGs, plugins, image sources."""

    root: Path

    @property
    def templates(self) -> Path:
        return self.root / "cloudformation"

    @property
    def dags(self) -> Path:
        return self.root / "dags"

    @property
    def studies(self) -> Path:
        """One folder per study (windows_batch/catalog.py); MWAA gets it with dags/."""
        return self.dags / "studies"

    @property
    def docker(self) -> Path:
        return self.root / "docker"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def mwaa_requirements(self) -> Path:
        return self.root / "requirements-mwaa.txt"

    def template(self, name: str) -> Path:
        return self.templates / f"{name}.yaml"


def _seconds(variable: str, default: float) -> float:
    return float(os.environ.get(variable, default))


@dataclass(frozen=True)
class Timing:
    """Polls and deadlines, in seconds; the environment variables are the scripts' own."""

    stack_poll_s: float = 10.0
    change_set_poll_s: float = 5.0
    # MWAA can take longer than an hour to create, update or delete.
    stack_timeout_s: float = 3 * 3600.0
    build_poll_s: float = 20.0
    # A new Windows instance takes many minutes to boot and register with SSM.
    builder_register_timeout_s: float = 1800.0
    # Image Builder's Windows build plus the Fast Launch distribution.
    ami_bake_timeout_s: float = 4 * 3600.0
    fast_launch_poll_s: float = 20.0
    fast_launch_disable_timeout_s: float = 3600.0
    drain_timeout_s: float = 1800.0
    destroy_poll_s: float = 30.0

    @classmethod
    def from_environment(cls) -> Timing:
        default = cls()
        return cls(
            stack_poll_s=_seconds("DEPLOY_POLL_SECONDS", default.stack_poll_s),
            change_set_poll_s=_seconds("DEPLOY_POLL_SECONDS", default.change_set_poll_s),
            stack_timeout_s=_seconds(
                "DESTROY_STACK_DELETE_TIMEOUT_SECONDS", default.stack_timeout_s
            ),
            build_poll_s=_seconds("DEPLOY_BUILD_POLL_SECONDS", default.build_poll_s),
            builder_register_timeout_s=_seconds(
                "DEPLOY_BUILDER_REGISTER_TIMEOUT_SECONDS", default.builder_register_timeout_s
            ),
            ami_bake_timeout_s=_seconds(
                "DEPLOY_AMI_BAKE_TIMEOUT_SECONDS", default.ami_bake_timeout_s
            ),
            fast_launch_poll_s=_seconds("FAST_LAUNCH_POLL_SECONDS", default.fast_launch_poll_s),
            fast_launch_disable_timeout_s=_seconds(
                "FAST_LAUNCH_DISABLE_TIMEOUT_SECONDS", default.fast_launch_disable_timeout_s
            ),
            drain_timeout_s=_seconds("DESTROY_DRAIN_TIMEOUT_SECONDS", default.drain_timeout_s),
            destroy_poll_s=_seconds("DESTROY_POLL_SECONDS", default.destroy_poll_s),
        )


@dataclass
class Context:
    """What every step needs: AWS, the console, the checkout, the deadlines and the prefix."""

    aws: Aws
    caller: Caller
    console: Console
    project: Project
    timing: Timing
    prefix: str

    def stack_name(self, layer: str) -> str:
        return f"{self.prefix}-{layer}"
