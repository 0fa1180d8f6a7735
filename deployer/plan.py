"""A deploy's resolved choices: what the options say, completed from the existing stacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from deployer.capacity import Capacity
from deployer.studies import Studies

# The DAG's estimate (windows_batch.boot_s / pull_s, cost.py). Without a baked AMI: cost.py's
# defaults. AWS says a Windows launch takes "15 minutes or longer" and Fast Launch launches "up
# to 65% faster" (EC2 User Guide, EC2 Fast Launch): 900 s x 0.35. The baked AMI has the images
# in Docker's cache and the agent's prefer-cached pull behaviour uses them: no pull.
PUBLIC_AMI_BOOT_S = 900
PUBLIC_AMI_PULL_S = 300
BAKED_AMI_BOOT_S = 315
BAKED_AMI_PULL_S = 0

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
    # --warm-pool N: stopped instances kept ready (None: the ECS stack's, else 0).
    warm_pool: int | None = None
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
    def boot_s(self) -> int:
        """A cold launch until the ECS agent registers, as the estimate assumes it."""
        return BAKED_AMI_BOOT_S if self.baking else PUBLIC_AMI_BOOT_S

    @property
    def pull_s(self) -> int:
        return BAKED_AMI_PULL_S if self.baking else PUBLIC_AMI_PULL_S

    @property
    def needs_images(self) -> bool:
        """The study stacks run the images, and a bake pulls them."""
        return not self.skipped("studies") or (self.baking and not self.skipped("ami"))
