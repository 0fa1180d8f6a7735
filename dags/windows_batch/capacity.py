"""How many of a study's tasks fit on one instance of the cluster, and whether one fits at all.

ECS places a task on a container instance only if the instance's registered CPU and memory
minus what its running tasks reserve cover the task's container (Windows: the container's
`cpu` and `memory`; task-level values are ignored). An instance registers 1024 CPU units per
vCPU, and as memory what Windows reports (taken as REPORTED_MEMORY_FRACTION of the instance
type's nominal memory: firmware and hypervisor keep some) minus ECS_RESERVED_MEMORY.

The deployer reads each instance type's vCPUs and memory from EC2 (DescribeInstanceTypes) and
passes them as INSTANCE_SIZES (`c5.xlarge=4/8192,...`, vCPUs/MiB); the table below covers the
default types when it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from windows_batch.settings import Settings

REPORTED_MEMORY_FRACTION = 0.95
"""deploy.sh's planning figure: Windows reports somewhat less than the type's nominal memory."""
CPU_UNITS_PER_VCPU = 1024


@dataclass(frozen=True)
class InstanceSize:
    """vCPUs and nominal memory of an EC2 instance type."""

    vcpus: int
    memory_mib: int

    def registered(self, *, reserved_memory_mib: int) -> tuple[int, int]:
        """(CPU units, MiB) the ECS agent registers for tasks on this type."""
        memory = int(self.memory_mib * REPORTED_MEMORY_FRACTION) - reserved_memory_mib
        return self.vcpus * CPU_UNITS_PER_VCPU, max(memory, 0)


KNOWN_SIZES: dict[str, InstanceSize] = {
    # EC2 instance types (EC2 User Guide, "Amazon EC2 instance type specifications"), the
    # defaults of the ECS stack and their larger sizes.
    "c5.large": InstanceSize(2, 4096),
    "c5.xlarge": InstanceSize(4, 8192),
    "c5.2xlarge": InstanceSize(8, 16384),
    "c5.4xlarge": InstanceSize(16, 32768),
    "c5a.large": InstanceSize(2, 4096),
    "c5a.xlarge": InstanceSize(4, 8192),
    "c5a.2xlarge": InstanceSize(8, 16384),
    "c5a.4xlarge": InstanceSize(16, 32768),
    "c6i.large": InstanceSize(2, 4096),
    "c6i.xlarge": InstanceSize(4, 8192),
    "c6i.2xlarge": InstanceSize(8, 16384),
    "c6i.4xlarge": InstanceSize(16, 32768),
    "m5.large": InstanceSize(2, 8192),
    "m5.xlarge": InstanceSize(4, 16384),
    "m5.2xlarge": InstanceSize(8, 32768),
    "m5.4xlarge": InstanceSize(16, 65536),
    "m6i.large": InstanceSize(2, 8192),
    "m6i.xlarge": InstanceSize(4, 16384),
    "m6i.2xlarge": InstanceSize(8, 32768),
    "m6i.4xlarge": InstanceSize(16, 65536),
    "r5.xlarge": InstanceSize(4, 32768),
    "r5.2xlarge": InstanceSize(8, 65536),
}


class CapacityError(ValueError):
    """A setting describes instance sizes the engine cannot use."""


def parse_sizes(raw: str) -> dict[str, InstanceSize]:
    """`c5.xlarge=4/8192,m5.xlarge=4/16384` -> {type: InstanceSize}."""
    sizes: dict[str, InstanceSize] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, value = item.partition("=")
        vcpus, _, memory = value.partition("/")
        if not (name.strip() and vcpus.strip().isdigit() and memory.strip().isdigit()):
            raise CapacityError(f"INSTANCE_SIZES: {item!r} is not `type=vCPUs/MiB`")
        sizes[name.strip()] = InstanceSize(int(vcpus), int(memory))
    return sizes


def instance_sizes(
    types: Iterable[str], known: Mapping[str, InstanceSize] | None = None
) -> dict[str, InstanceSize]:
    """The sizes of `types` (the deployment's, else the table); unknown types are left out."""
    table = {**KNOWN_SIZES, **(known or {})}
    return {t: table[t] for t in types if t in table}


def slots_on(size: InstanceSize, *, cpu: int, memory_mib: int, reserved_memory_mib: int) -> int:
    """Tasks of `cpu` units and `memory_mib` that fit on an empty instance of `size`."""
    units, memory = size.registered(reserved_memory_mib=reserved_memory_mib)
    return min(units // max(cpu, 1), memory // max(memory_mib, 1))


def slots_for(settings: Settings, *, cpu: int, memory_mib: int) -> int:
    """A study's tasks per instance: the least over the group's types (it may launch any).

    At least 1, so a form can still be drawn for a study too large for the cluster; plan_tasks
    refuses such a study (`check_fits`) before anything scales.
    """
    sizes = instance_sizes(settings.cost.instance_types, settings.instance_sizes)
    if not sizes:
        return 1
    return max(
        1,
        min(
            slots_on(
                s, cpu=cpu, memory_mib=memory_mib, reserved_memory_mib=settings.reserved_memory_mib
            )
            for s in sizes.values()
        ),
    )


def check_fits(settings: Settings, *, cpu: int, memory_mib: int) -> str | None:
    """Why a task of this size can never be placed on the group's instance types, or None."""
    sizes = instance_sizes(settings.cost.instance_types, settings.instance_sizes)
    for instance_type, size in sizes.items():
        units, memory = size.registered(reserved_memory_mib=settings.reserved_memory_mib)
        if cpu > units or memory_mib > memory:
            return (
                f"a task asks for {cpu} CPU units and {memory_mib} MiB, but a {instance_type} "
                f"registers {units} CPU units and about {memory} MiB for tasks "
                f"({size.vcpus} vCPUs, {size.memory_mib} MiB, {settings.reserved_memory_mib} "
                "MiB reserved): it would never be placed"
            )
    return None
