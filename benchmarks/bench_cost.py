"""Time and cost of the seed's default study on paper: as the seed ran it, and as we run it.

The study is the form's default (8 Eb/N0 points, 200 tasks, 4e9 bits per task at most, 1000
errors per point). Each step changes one thing, and the figures come from the DAG's own cost
model (dags/windows_batch/cost.py) and planner, with the model's documented defaults:

- seed: the equal split with every task simulating all its bits (no early stop, as the seed
  planned it), 6 on-demand c5.xlarge, the stock ECS-optimized Windows AMI (boot BOOT_S, pull
  PULL_S on every fresh instance);
- + adaptive planning (the form's default allocation, with its early stop);
- + Spot: every instance on Spot at SPOT_PRICE_FRACTION x the on-demand price (on paper:
  no DescribeSpotPriceHistory call here);
- + baked AMI: the image already on the AMI (pull 0 s) and EC2 Fast Launch, which AWS says
  launches "up to 65 % faster" (boot 0.35 x BOOT_S, the best case);
- + auto size: `cluster_size: auto`, the cheapest size within AUTO_SLOWDOWN x the fastest
  (with a short boot, more instances stay within the factor: auto buys time, not money; the
  last line shows auto where boot dominates).

Same for every step: the kernel's rate per task (the BER study's BITS_PER_S), TASK_START_S per
task, SCALE_IN_S, the study's tasks per instance on c5.xlarge (3: capacity.py, as deploy.sh
computes it for the default types), at most 10 instances, the prices of cost.py's table. The
seed's own per-frame kernel was slower still (benchmarks/bench_kernel.py measures by how
much); it is left out, so the ratios below are only what this issue's changes give. MWAA and
the NAT gateway (the idle floor) are not in the cluster cost.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dags"))

from studies.bersim import plan
from studies.bersim.form import DEFAULTS
from studies.bersim.study import bits_per_s
from windows_batch import capacity, cost
from windows_batch import settings as settings_mod

SLOTS = capacity.slots_for(settings_mod.load({}), cpu=1024, memory_mib=1536)
MAX_SIZE = 10
SEED_SIZE = 6
FAST_LAUNCH_BOOT = 0.35
"""EnableFastLaunch: instances launch "up to 65 % faster" (EC2 API reference)."""


def task_seconds(allocation: str, settings: cost.CostSettings) -> list[float]:
    """Each task's expected seconds for the default study: `seed` (equal, no early stop) or
    `adaptive`."""
    study = plan.Inputs(
        s3_bucket="bench",
        num_tasks=DEFAULTS["num_tasks"],
        ebn0_db=tuple(float(x) for x in DEFAULTS["ebn0_db"]),
        max_bits_per_task=DEFAULTS["max_bits_per_task"],
        target_errors=0 if allocation == "seed" else DEFAULTS["target_errors"],
        allocation="equal" if allocation == "seed" else allocation,
        seed=DEFAULTS["seed"],
        s3_prefix_task_results="sim/task_results",
        s3_prefix_aggregate_results="sim/aggregate_results",
    )
    bits = plan.plan_study(study, "bench").expected_task_bits
    return [settings.task_start_s + b / bits_per_s() for b in bits]


def main() -> None:
    base = cost.CostSettings()
    spot = dataclasses.replace(base, purchase_option="spot", on_demand_base=0)
    baked = dataclasses.replace(spot, boot_s=base.boot_s * FAST_LAUNCH_BOOT, pull_s=0.0)
    steps: list[tuple[str, str, cost.CostSettings, int | str]] = [
        ("seed: equal split, 6 on-demand, stock AMI", "seed", base, SEED_SIZE),
        ("+ adaptive planning", "adaptive", base, SEED_SIZE),
        ("+ Spot", "adaptive", spot, SEED_SIZE),
        ("+ baked AMI with Fast Launch", "adaptive", baked, SEED_SIZE),
        ("+ cluster_size auto", "adaptive", baked, cost.AUTO),
        ("for comparison, auto on-demand with the stock AMI", "adaptive", base, cost.AUTO),
    ]
    print(
        f"assumptions: boot {base.boot_s:.0f} s (baked: {baked.boot_s:.0f} s), pull "
        f"{base.pull_s:.0f} s (baked: 0 s), {base.task_start_s:.0f} s start-up per task, "
        f"{bits_per_s():.3g} bit/s per task, scale-in {base.scale_in_s:.0f} s, "
        f"{SLOTS} tasks per instance, Spot at {base.spot_price_fraction:g} x on-demand, "
        f"on-demand c5.xlarge {base.on_demand_usd_per_h['c5.xlarge']} USD/h "
        f"({cost.PRICES_AS_OF}), auto within {base.auto_slowdown:g}x of the fastest"
    )
    seed: cost.Estimate | None = None
    for name, allocation, settings, size in steps:
        task_s = task_seconds(allocation, settings)
        sizing = cost.size_cluster(
            task_s,
            requested=size,
            max_size=MAX_SIZE,
            slots_per_instance=SLOTS,
            settings=settings,
            prices=cost.prices_from(settings),
        )
        found = sizing.chosen
        seed = seed or found
        assert found.cost_usd is not None
        assert seed.cost_usd is not None
        print(
            f"{name}: {found.size} instances, {found.wall_s / 60:.1f} min "
            f"(compute {found.compute_s / 60:.1f} min, {sum(task_s) / 3600:.2f} task-hours), "
            f"{found.instance_hours:.2f} instance-hours, {found.cost_usd:.2f} USD; "
            f"time {found.wall_s / seed.wall_s:.2f}x, cost {found.cost_usd / seed.cost_usd:.2f}x "
            "the seed's"
        )
