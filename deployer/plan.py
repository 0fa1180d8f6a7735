"""A deploy's resolved choices: what the options say, completed from the existing stacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployer.capacity import Capacity

# The steps of a deploy, in order; --skip takes any of them.
LAYERS = ("storage", "network", "image", "ami", "ecs", "upload", "mwaa")
# The stacks of a deployment, in deploy order (destroy deletes them in reverse).
STACK_LAYERS = ("storage", "network", "image", "ami", "ecs", "mwaa")


@dataclass(frozen=True)
class DeployOptions:
    """The command line as given; None means "not given" where a run keeps the stack's."""

    region: str | None = None
    prefix: str = "windows-batch"
    instance_types: tuple[str, ...] | None = None
    purchase_option: str | None = None
    on_demand_base: int | None = None
    max_instances: int = 10
    task_cpu: int = 1024
    task_memory_mib: int = 1536
    reserved_memory_mib: int = 2048
    slots_per_instance: int | None = None
    image_uri: str | None = None
    build_image: bool = False
    bake_ami: bool | None = None
    check_only: bool = False
    assume_yes: bool = False
    webserver_access: str = "PUBLIC_ONLY"
    environment_class: str = "mw1.small"
    nat_gateways: int = 1
    rdp_cidr: str = ""
    skip: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Plan:
    options: DeployOptions
    capacity: Capacity
    # --bake-ami given, or kept: the ami stack exists.
    baking: bool
    run: str

    def skipped(self, layer: str) -> bool:
        return layer in self.options.skip
