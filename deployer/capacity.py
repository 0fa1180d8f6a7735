"""The container instances: instance types, purchase option, and each study's tasks on them.

A capacity option not given keeps what the ECS stack has (a re-run changes nothing), else the
default; the warm pool's size (--warm-pool) is one of them. Whether a study's task fits, and
how many fit on one instance, is the engine's rule (dags/windows_batch/capacity.py), which the
DAGs apply too: what an instance registers with ECS (Windows reports less memory than the
type's nominal figure, and the agent registers that minus ECS_RESERVED_MEMORY) against the
study's container; the group may launch any type of the list, so a study must fit on every
one, and its tasks per instance are the minimum over them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deployer.console import DeployError
from deployer.engine import capacity as engine_capacity

DEFAULT_INSTANCE_TYPES = ("c5.xlarge", "c5a.xlarge", "c6i.xlarge", "m5.xlarge")
# ecs.yaml's InstanceType, InstanceType2, InstanceType3, InstanceType4.
MAX_INSTANCE_TYPES = 4
INSTANCE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


def parse_instance_types(text: str) -> tuple[str, ...]:
    """The list's form only; `check_types` checks each type against EC2."""
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
    # Stopped, pre-initialized instances of the group's warm pool (ecs.yaml WarmPoolSize).
    warm_pool: int = 0

    @property
    def on_demand_instances(self) -> int:
        """The most On-Demand instances running at once. A warm pool's are On-Demand too, and
        they run while they start; the group and its pool together hold at most
        max(MaxGroupPreparedCapacity, desired) instances ("the maximum number of instances
        that are allowed to be in the warm pool or in any state except Terminated for the Auto
        Scaling group": Auto Scaling API reference, WarmPoolConfiguration), so the pool adds
        none above max(pool, the group's maximum)."""
        if self.purchase_option != "spot":
            return max(self.max_instances, self.warm_pool)
        return max(min(self.on_demand_base, self.max_instances), self.warm_pool)

    @property
    def spot_instances(self) -> int:
        if self.purchase_option != "spot":
            return 0
        return self.max_instances - min(self.on_demand_base, self.max_instances)

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
            "WarmPoolSize": str(self.warm_pool),
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
    warm_pool: int | None = None,
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
    if warm_pool is None and parameters.get("WarmPoolSize"):
        warm_pool = int(parameters["WarmPoolSize"])
        if warm_pool:
            notes.append(f"Warm pool of {warm_pool} (kept from stack {stack_name})")
    return Capacity(
        instance_types=instance_types or DEFAULT_INSTANCE_TYPES,
        purchase_option=purchase_option or "on-demand",
        on_demand_base=on_demand_base or 0,
        max_instances=max_instances,
        warm_pool=warm_pool or 0,
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


def check_types(types: InstanceTypes, capacity: Capacity, *, region: str) -> list[InstanceType]:
    """Every type of the list as EC2 describes it; DeployError names a type that cannot be
    used (not offered, not x86_64, another size than the first)."""
    described_types: list[InstanceType] = []
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
        first = described_types[0] if described_types else described
        if described.vcpus != first.vcpus:
            raise DeployError(
                f"instance types must be of one size: {name} has {described.vcpus} vCPUs, "
                f"{first.name} {first.vcpus}"
            )
        described_types.append(described)
    return described_types


def sizes_parameter(described: list[InstanceType]) -> str:
    """mwaa.yaml's InstanceSizes (`type=vCPUs/MiB,...`): the DAGs size each study from it."""
    return ",".join(f"{t.name}={t.vcpus}/{t.memory_mib}" for t in described)


def describe_sizes(described: list[InstanceType]) -> str:
    return ", ".join(f"{t.name} {t.vcpus} vCPUs {t.memory_mib} MiB" for t in described)


@dataclass(frozen=True)
class Fit:
    """A study's tasks per instance: the minimum over the types, and each type's count."""

    per_instance: int
    detail: str


def study_fit(
    described: list[InstanceType],
    *,
    study: str,
    cpu: int,
    memory_mib: int,
    reserved_memory_mib: int,
) -> Fit:
    """How many of the study's tasks fit on each type; DeployError, naming the study and both
    sizes, when its task fits on some type not at all (ECS would never place it there)."""
    counts: list[tuple[str, int]] = []
    for instance_type in described:
        size = engine_capacity.InstanceSize(instance_type.vcpus, instance_type.memory_mib)
        units, memory = size.registered(reserved_memory_mib=reserved_memory_mib)
        slots = engine_capacity.slots_on(
            size, cpu=cpu, memory_mib=memory_mib, reserved_memory_mib=reserved_memory_mib
        )
        if slots < 1:
            raise DeployError(
                f"study {study}: a task asks for {cpu} CPU units and {memory_mib} MiB, but a "
                f"{instance_type.name} registers {units} CPU units and about {memory} MiB for "
                f"tasks ({instance_type.vcpus} vCPUs, {instance_type.memory_mib} MiB, "
                f"{reserved_memory_mib} MiB reserved): it would never be placed"
            )
        counts.append((instance_type.name, slots))
    per_instance = min(slots for _name, slots in counts)
    parts = ", ".join(f"{name} {slots}" for name, slots in counts)
    return Fit(
        per_instance=per_instance,
        detail=f"{parts} tasks per instance -> {per_instance} for every type",
    )
