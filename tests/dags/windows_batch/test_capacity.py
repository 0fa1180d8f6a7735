"""capacity.py: how many of a study's tasks fit on an instance, and a task no instance can hold
refused (at plan time from the instance types, at run time from the registered instances),
naming both sizes."""

from __future__ import annotations

import pytest
from moto.ec2.models.instance_types import INSTANCE_TYPES as EC2_INSTANCE_TYPES

from windows_batch import capacity
from windows_batch import settings as settings_mod
from windows_batch.capacity import InstanceSize, Size, placement_refusal

DEFAULT_TYPES = "c5.xlarge,c5a.xlarge,c6i.xlarge,m5.xlarge"  # ecs.yaml's defaults


def settings(types: str = DEFAULT_TYPES, sizes: str = "") -> settings_mod.Settings:
    return settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__INSTANCE_TYPES": types,
            "AIRFLOW__WINDOWS_BATCH__INSTANCE_SIZES": sizes,
            "AIRFLOW__WINDOWS_BATCH__RESERVED_MEMORY_MIB": "2048",
        }
    )


def test_the_table_agrees_with_ec2s_description_of_each_type() -> None:
    """vCPUs and memory as EC2's DescribeInstanceTypes gives them (moto ships AWS's data)."""
    for name, size in capacity.KNOWN_SIZES.items():
        described = EC2_INSTANCE_TYPES[name]
        assert described["VCpuInfo"]["DefaultVCpus"] == size.vcpus, name
        assert described["MemoryInfo"]["SizeInMiB"] == size.memory_mib, name
        assert "x86_64" in described["ProcessorInfo"]["SupportedArchitectures"], name


def test_a_c5_xlarge_registers_95_percent_of_its_memory_less_the_reserved() -> None:
    # 8192 MiB x 95 % - 2048 reserved = 5734 MiB: 3 tasks of 1536 MiB, 4 of 1024 CPU units.
    assert capacity.KNOWN_SIZES["c5.xlarge"].registered(reserved_memory_mib=2048) == (4096, 5734)
    assert capacity.slots_for(settings(), cpu=1024, memory_mib=1536) == 3
    # The least over the types the group may launch: m5.xlarge alone holds 4.
    assert capacity.slots_for(settings("m5.xlarge"), cpu=1024, memory_mib=1536) == 4


def test_the_deployers_sizes_win_over_the_table() -> None:
    found = settings("x9.huge,c5.xlarge", "x9.huge=2/4096")
    # x9.huge: 2048 units, 4096 x 0.95 - 2048 = 1843 MiB: one task of 1536 MiB.
    assert capacity.slots_for(found, cpu=1024, memory_mib=1536) == 1
    with pytest.raises(capacity.CapacityError, match="INSTANCE_SIZES"):
        capacity.parse_sizes("c5.xlarge=four/8192")


@pytest.mark.parametrize(
    ("cpu", "memory_mib", "needle"),
    [
        pytest.param(8192, 1536, "8192 CPU units and 1536 MiB", id="cpu"),
        pytest.param(1024, 8000, "1024 CPU units and 8000 MiB", id="memory-of-one-type"),
    ],
)
def test_a_task_one_type_of_the_group_cannot_hold_is_refused_naming_both_sizes(
    cpu: int, memory_mib: int, needle: str
) -> None:
    # 8000 MiB fits an m5.xlarge (13516 MiB) but not a c5.xlarge the group may launch as well:
    # on a cluster of c5s it would wait for ever.
    refusal = capacity.check_fits(settings(), cpu=cpu, memory_mib=memory_mib)
    assert refusal is not None
    assert needle in refusal
    assert "a c5.xlarge registers 4096 CPU units and about 5734 MiB" in refusal
    assert capacity.check_fits(settings(), cpu=1024, memory_mib=1536) is None
    if cpu == 1024:
        assert capacity.check_fits(settings("m5.xlarge"), cpu=cpu, memory_mib=memory_mib) is None


def test_a_type_nothing_describes_is_not_judged() -> None:
    assert capacity.check_fits(settings("x9.huge"), cpu=8192, memory_mib=60000) is None
    assert capacity.slots_for(settings("x9.huge"), cpu=1024, memory_mib=1536) == 1


def test_placement_is_refused_only_when_no_registered_instance_holds_the_task() -> None:
    small, large = Size(4096, 5734), Size(4096, 13516)
    task = Size(1024, 8000)
    refusal = placement_refusal(task=task, registered=[small, small])
    assert refusal is not None
    assert "needs 1024 CPU units and 8000 MiB" in refusal
    assert "none of the cluster's 2 registered container instances" in refusal
    assert "4096 CPU units and 5734 MiB" in refusal
    assert placement_refusal(task=task, registered=[small, large]) is None
    # No instance registered yet: nothing to judge, the task waits.
    assert placement_refusal(task=task, registered=[]) is None
    assert InstanceSize(4, 8192).registered(reserved_memory_mib=0) == (4096, 7782)
