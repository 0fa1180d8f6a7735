"""capacity.py: a task no instance can hold is refused, naming both sizes; others are not."""

from __future__ import annotations

import pytest
from moto.ec2.models.instance_types import INSTANCE_TYPES as EC2_INSTANCE_TYPES

from windows_batch import settings as settings_mod
from windows_batch.capacity import (
    INSTANCE_TYPES,
    Size,
    placement_refusal,
    plan_refusal,
    registered_size,
)

DEFAULT_TYPES = ("c5.xlarge", "c5a.xlarge", "c6i.xlarge", "m5.xlarge")  # ecs.yaml's defaults


def test_the_table_agrees_with_ec2s_description_of_each_type() -> None:
    """vCPUs and memory as EC2's DescribeInstanceTypes gives them (moto ships AWS's data)."""
    for name, (vcpus, memory_mib) in INSTANCE_TYPES.items():
        described = EC2_INSTANCE_TYPES[name]
        assert described["VCpuInfo"]["DefaultVCpus"] == vcpus, name
        assert described["MemoryInfo"]["SizeInMiB"] == memory_mib, name
        assert "x86_64" in described["ProcessorInfo"]["SupportedArchitectures"], name


def test_a_c5_xlarge_registers_what_deploy_sh_plans_with() -> None:
    # 8192 MiB x 95 % - 2048 reserved = 5734 MiB (README: 3 tasks of 1536 MiB).
    assert registered_size("c5.xlarge", reserved_memory_mib=2048) == Size(4096, 5734)
    assert registered_size("x9.huge", reserved_memory_mib=2048) is None


def test_the_default_task_fits_the_default_group() -> None:
    task = settings_mod.load({}).task_size
    assert plan_refusal(task=task, instance_types=DEFAULT_TYPES, reserved_memory_mib=2048) is None


@pytest.mark.parametrize(
    ("task", "needle"),
    [
        pytest.param(Size(8192, 1536), "8192 CPU units and 1536 MiB", id="cpu"),
        pytest.param(Size(1024, 20000), "1024 CPU units and 20000 MiB", id="memory"),
    ],
)
def test_a_task_larger_than_every_type_is_refused_naming_both_sizes(
    task: Size, needle: str
) -> None:
    refusal = plan_refusal(task=task, instance_types=DEFAULT_TYPES, reserved_memory_mib=2048)
    assert refusal is not None
    assert needle in refusal
    assert "c5.xlarge registers about 4096 CPU units and 5734 MiB" in refusal
    assert "m5.xlarge registers about 4096 CPU units and 13516 MiB" in refusal


def test_a_task_that_fits_one_type_or_an_unknown_type_is_not_refused() -> None:
    # 8000 MiB: too much for the c5/c6i types, room on m5.xlarge (13516 MiB).
    task = Size(1024, 8000)
    assert plan_refusal(task=task, instance_types=DEFAULT_TYPES, reserved_memory_mib=2048) is None
    assert plan_refusal(task=task, instance_types=("c5.xlarge",), reserved_memory_mib=2048)
    # A type the table does not know may be large enough: not refused.
    assert (
        plan_refusal(task=task, instance_types=("c5.xlarge", "x9.huge"), reserved_memory_mib=2048)
        is None
    )


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
