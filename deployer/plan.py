"""A deploy's resolved choices: what the options say, completed from the existing stacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployer.capacity import Capacity
from deployer.studies import Studies

# The steps of a deploy, in order; --skip takes any of them. "studies" is every study stack.
LAYERS = ("storage", "network", "image", "ami", "ecs", "studies", "upload", "mwaa")
# The stacks of a deployment, in deploy order (destroy deletes them in reverse, the study
# stacks between mwaa and ecs).
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
    reserved_memory_mib: int = 2048
    # --image-uri, as given: STUDY=URI, or a bare URI for a deployment of one study.
    image_uris: tuple[str, ...] = ()
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
    studies: Studies

    def skipped(self, layer: str) -> bool:
        return layer in self.options.skip

    @property
    def needs_images(self) -> bool:
        """The study stacks run the images, and a bake pulls them."""
        return not self.skipped("studies") or (self.baking and not self.skipped("ami"))
