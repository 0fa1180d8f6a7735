"""The container instances: instance types, purchase option, and the tasks that fit on each.

A capacity option not given keeps what the ECS stack has (a re-run changes nothing), else the
default. The tasks per instance come from what an instance registers with ECS: Windows reports
less memory than the type's nominal figure and the agent registers that minus
ECS_RESERVED_MEMORY; the group may launch any type of the list, so the minimum over them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deployer.console import DeployError

DEFAULT_INSTANCE_TYPES = ("c5.xlarge", "c5a.xlarge", "c6i.xlarge", "m5.xlarge")
# ecs.yaml's InstanceType, InstanceType2, InstanceType3, InstanceType4.
MAX_INSTANCE_TYPES = 4
# Windows reports less than the nominal memory (firmware, hypervisor): plan with 95 % of it.
REPORTED_MEMORY_PERCENT = 95
INSTANCE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


def parse_instance_types(text: str) -> tuple[str, ...]:
    """The list's form only; `slots_per_instance` checks each type against EC2."""
    types = tuple(text.split(","))
    if not 1 <= len(types) <= MAX_INSTANCE_TYPES:
        raise DeployError(
            f"--instance-types takes 1 to {MAX_INSTANCE_TYPES} types (the template has "
            f"{MAX_INSTANCE_TYPES} slots): {text}"
        )
    seen: set[str] = set()
    for name in types:
        if not INSTANCE_TYPE_PATTERN.match(name):
            raise DeployError(f"not an EC2 instance type: '{name}' in --instance-types {text}")
        if name in seen:
            raise DeployError(f"instance type {name} is listed twice in --instance-types")
        seen.add(name)
    return types


@dataclass(frozen=True)
class Capacity:
    instance_types: tuple[str, ...]
    purchase_option: str
    on_demand_base: int
    max_instances: int

    @property
    def on_demand_instances(self) -> int:
        if self.purchase_option != "spot":
            return self.max_instances
        return min(self.on_demand_base, self.max_instances)

    @property
    def spot_instances(self) -> int:
        return self.max_instances - self.on_demand_instances

    def describe(self) -> str:
        if self.purchase_option == "spot":
            return f"spot above {self.on_demand_base} on-demand"
        return self.purchase_option

    def ecs_parameters(self) -> dict[str, str]:
        """ecs.yaml's InstanceType, InstanceType2..4 (empty = unused) and purchase settings."""
        parameters = {
            ("InstanceType" if i == 0 else f"InstanceType{i + 1}"): (
                self.instance_types[i] if i < len(self.instance_types) else ""
            )
            for i in range(MAX_INSTANCE_TYPES)
        }
        parameters |= {
            "PurchaseOption": self.purchase_option,
            "OnDemandBaseCapacity": str(self.on_demand_base),
            "MaxInstances": str(self.max_instances),
        }
        return parameters


def resolve_capacity(
    *,
    ecs_stack: dict[str, Any] | None,
    stack_name: str,
    instance_types: tuple[str, ...] | None,
    purchase_option: str | None,
    on_demand_base: int | None,
    max_instances: int,
    notes: list[str],
) -> Capacity:
    """Options given win; else the ECS stack's parameters (not its outputs: an old stack may
    have none); else the defaults. What was kept is appended to `notes` for the user."""
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue", "")
        for p in (ecs_stack or {}).get("Parameters", [])
    }
    if instance_types is None and parameters.get("InstanceType"):
        kept = [parameters["InstanceType"]] + [
            parameters[name]
            for name in ("InstanceType2", "InstanceType3", "InstanceType4")
            if parameters.get(name) and parameters[name] != "None"
        ]
        instance_types = parse_instance_types(",".join(kept))
        notes.append(f"Instance types {','.join(instance_types)} (kept from stack {stack_name})")
    if purchase_option is None and parameters.get("PurchaseOption"):
        purchase_option = parameters["PurchaseOption"]
        notes.append(f"Purchase option {purchase_option} (kept from stack {stack_name})")
    if on_demand_base is None and parameters.get("OnDemandBaseCapacity"):
        on_demand_base = int(parameters["OnDemandBaseCapacity"])
    return Capacity(
        instance_types=instance_types or DEFAULT_INSTANCE_TYPES,
        purchase_option=purchase_option or "on-demand",
        on_demand_base=on_demand_base or 0,
        max_instances=max_instances,
    )


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int
    architectures: tuple[str, ...]


class InstanceTypes:
    """describe-instance-types, once per type and run."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2
        self._known: dict[str, InstanceType | None] = {}

    def get(self, name: str) -> InstanceType | None:
        """The type, or None when EC2 does not offer it in the region."""
        if name not in self._known:
            try:
                described = self.ec2.describe_instance_types(InstanceTypes=[name])["InstanceTypes"]
            except ClientError:
                described = []
            self._known[name] = (
                InstanceType(
                    name=name,
                    vcpus=int(described[0]["VCpuInfo"]["DefaultVCpus"]),
                    memory_mib=int(described[0]["MemoryInfo"]["SizeInMiB"]),
                    architectures=tuple(described[0]["ProcessorInfo"]["SupportedArchitectures"]),
                )
                if described
                else None
            )
        return self._known[name]


@dataclass(frozen=True)
class Slots:
    per_instance: int
    detail: str
    vcpus: int


def slots_per_instance(
    types: InstanceTypes,
    capacity: Capacity,
    *,
    region: str,
    task_cpu: int,
    task_memory_mib: int,
    reserved_memory_mib: int,
    given: int | None,
) -> Slots:
    """Tasks per instance that hold for every type of the list; DeployError names the type
    that cannot be used (not offered, not x86_64, another size, too small for one task)."""
    minimum: int | None = None
    parts: list[str] = []
    first: InstanceType | None = None
    for name in capacity.instance_types:
        described = types.get(name)
        if described is None:
            raise DeployError(
                f"unknown instance type {name}: EC2 does not offer it in {region} "
                "(describe-instance-types)"
            )
        if "x86_64" not in described.architectures:
            raise DeployError(
                f"{name} is {','.join(described.architectures)}, not x86_64: the Windows Server "
                "2022 ECS-optimized AMI runs on x86_64 only"
            )
        first = first or described
        if described.vcpus != first.vcpus:
            raise DeployError(
                f"instance types must be of one size: {name} has {described.vcpus} vCPUs, "
                f"{first.name} {first.vcpus}"
            )
        registered_mib = described.memory_mib * REPORTED_MEMORY_PERCENT // 100 - reserved_memory_mib
        slots = min(described.vcpus * 1024 // task_cpu, registered_mib // task_memory_mib)
        if slots < 1:
            raise DeployError(
                f"a task ({task_cpu} CPU units, {task_memory_mib} MiB) does not fit on {name} "
                f"({described.vcpus} vCPUs, about {registered_mib} MiB registered)"
            )
        parts.append(f"{name} {slots}")
        minimum = slots if minimum is None else min(minimum, slots)
    # parse_instance_types allows no empty list.
    assert first is not None
    assert minimum is not None
    chosen = given or minimum
    return Slots(
        per_instance=chosen,
        detail=f"{', '.join(parts)} tasks per instance -> {chosen} for every type",
        vcpus=first.vcpus,
    )
