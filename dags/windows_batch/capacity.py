"""Whether a task of a given size can ever be placed on the cluster (pure Python, no AWS).

ECS places a task on a container instance only if the instance's remaining CPU and memory hold
the task's reservation; a task larger than every instance gets RESOURCE:CPU or RESOURCE:MEMORY
for ever. Two checks use this module:
- `plan_refusal` (plan_tasks, before anything scales): the task against what each instance
  type of the group would register (a table of EC2's sizes, and the agent's reserved memory);
- `placement_refusal` (the ECS operator, on a RESOURCE:* failure): the task against what the
  cluster's ACTIVE container instances did register.
Either names both sizes. An instance type missing from the table is not judged (it may fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CPU_UNITS_PER_VCPU = 1024
REPORTED_MEMORY_PERCENT = 95
"""Windows reports less memory than the type's nominal size; the agent registers what it
reports minus ECS_RESERVED_MEMORY (deploy.sh plans with the same 95 %)."""
# vCPUs and memory (MiB) of the x86_64 types the group is meant to run (EC2 User Guide,
# "Amazon EC2 instance type specifications": compute optimized and general purpose).
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    **{f"{family}.large": (2, 4096) for family in ("c5", "c5a", "c6i")},
    **{f"{family}.xlarge": (4, 8192) for family in ("c5", "c5a", "c6i")},
    **{f"{family}.2xlarge": (8, 16384) for family in ("c5", "c5a", "c6i")},
    **{f"{family}.large": (2, 8192) for family in ("m5", "m6i")},
    **{f"{family}.xlarge": (4, 16384) for family in ("m5", "m6i")},
    **{f"{family}.2xlarge": (8, 32768) for family in ("m5", "m6i")},
}


@dataclass(frozen=True)
class Size:
    """CPU units and MiB: what a task reserves, or what a container instance registers."""

    cpu: int
    memory_mib: int

    def holds(self, task: Size) -> bool:
        return task.cpu <= self.cpu and task.memory_mib <= self.memory_mib

    def __str__(self) -> str:
        return f"{self.cpu} CPU units and {self.memory_mib} MiB"


def registered_size(instance_type: str, *, reserved_memory_mib: int) -> Size | None:
    """What an instance of this type registers with ECS; None for a type not in the table."""
    if instance_type not in INSTANCE_TYPES:
        return None
    vcpus, memory_mib = INSTANCE_TYPES[instance_type]
    reported_mib = memory_mib * REPORTED_MEMORY_PERCENT // 100
    return Size(vcpus * CPU_UNITS_PER_VCPU, reported_mib - reserved_memory_mib)


def plan_refusal(
    *, task: Size, instance_types: Sequence[str], reserved_memory_mib: int
) -> str | None:
    """Why no instance type of the group could ever run the task, or None (it may fit)."""
    sizes = {t: registered_size(t, reserved_memory_mib=reserved_memory_mib) for t in instance_types}
    known = {t: s for t, s in sizes.items() if s is not None}
    if not known or len(known) < len(sizes) or any(s.holds(task) for s in known.values()):
        return None
    each = "; ".join(f"{t} registers about {s}" for t, s in known.items())
    return (
        f"a task needs {task} (TASK_CPU, TASK_MEMORY_MIB), more than any instance type of "
        f"the group can give it ({each}): ECS could never place it. Use a larger instance "
        "type (deploy.sh --instance-types) or a smaller task"
    )


def placement_refusal(*, task: Size, registered: Sequence[Size]) -> str | None:
    """Why none of the cluster's registered container instances can hold the task, or None."""
    if not registered or any(host.holds(task) for host in registered):
        return None
    most = Size(max(h.cpu for h in registered), max(h.memory_mib for h in registered))
    return (
        f"the task needs {task}, and none of the cluster's {len(registered)} registered "
        f"container instances has that much (the most registered: {most}): it would wait "
        "for room until its deadline for nothing"
    )
