"""Planning: the adaptive split against the equal split, for the form's default study.

Goal (issue 3): the same or better worst-point precision (errors counted at the hardest point)
as an equal split, with at most 1/5 of the simulated bits, and a makespan bounded by the
hardest point's share rather than by stragglers.

Figures per allocation, from the planner's own task list (dags/studies/bersim/plan.py):
- expected: bits and errors from theory (BER of BPSK/AWGN; Poisson/negative binomial counts);
- simulated: the same tasks drawn with numpy (negative binomial bits-to-target, binomial
  errors, early stop on the kernel's chunk boundaries: bersim.kernel.DEFAULT_CHUNK_BITS), 30
  replicates: mean and 5th percentile;
- makespan: the longest task (bits) and a longest-first list schedule over the cluster's slots
  (6 instances x 4 slots), in bits of the busiest slot.
"""

from __future__ import annotations

import heapq
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bersim.kernel import DEFAULT_CHUNK_BITS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dags"))

from studies.bersim import plan
from studies.bersim.form import DEFAULTS

SLOTS = 6 * 4
REPLICATES = 30


@dataclass
class Figures:
    name: str
    bits: float
    worst_errors: float
    worst_point: float
    longest_task: int
    makespan_bits: float
    sim_bits: float
    sim_worst_mean: float
    sim_worst_p5: float
    tasks_at_worst: int


def list_schedule(durations: list[float], slots: int) -> float:
    """Longest-first greedy list scheduling: the busiest slot's total."""
    loads = [0.0] * slots
    heapq.heapify(loads)
    for d in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + d)
    return max(loads)


def expected_task_bits(task: plan.TaskSpec) -> float:
    ber = plan.ber_theory(task.ebn0_db)
    if task.target_errors <= 0 or ber <= 0:
        return float(task.max_bits)
    counted = plan.expected_counted(task.max_bits * ber, task.target_errors)
    return min(float(task.max_bits), counted / ber)


def simulate_task(task: plan.TaskSpec, rng: np.random.Generator) -> tuple[int, int]:
    """(bits, errors) of one task as the kernel runs it, drawn at random."""
    ber = plan.ber_theory(task.ebn0_db)
    cap, target = task.max_bits, task.target_errors
    if target <= 0:
        return cap, int(rng.binomial(cap, ber))
    # Bits until the target-th error: `target` successes of a Bernoulli(ber) sequence.
    to_target = int(rng.negative_binomial(target, ber)) + target
    if to_target <= cap:
        bits = min(cap, math.ceil(to_target / DEFAULT_CHUNK_BITS) * DEFAULT_CHUNK_BITS)
        return bits, target + int(rng.binomial(bits - to_target, ber))
    # Cap reached first: fewer than `target` errors in `cap` bits.
    while True:
        errors = int(rng.binomial(cap, ber))
        if errors < target:
            return cap, errors


def figures(name: str, study: plan.Inputs) -> Figures:
    p = plan.plan_study(study, "bench")
    points = sorted(set(t.ebn0_db for t in p.tasks))
    worst_point = max(points)  # the hardest point: the highest Eb/N0
    expected_bits = [expected_task_bits(t) for t in p.tasks]
    worst_errors = p.expected_errors[worst_point]
    rng = np.random.default_rng(20260101)
    sim_bits, sim_worst = [], []
    for _ in range(REPLICATES):
        draws = [simulate_task(t, rng) for t in p.tasks]
        sim_bits.append(sum(b for b, _ in draws))
        sim_worst.append(
            sum(e for (_, e), t in zip(draws, p.tasks, strict=True) if t.ebn0_db == worst_point)
        )
    return Figures(
        name=name,
        bits=sum(expected_bits),
        worst_errors=worst_errors,
        worst_point=worst_point,
        longest_task=max(t.max_bits for t in p.tasks),
        makespan_bits=list_schedule(expected_bits, SLOTS),
        sim_bits=float(np.mean(sim_bits)),
        sim_worst_mean=float(np.mean(sim_worst)),
        sim_worst_p5=float(np.percentile(sim_worst, 5)),
        tasks_at_worst=sum(1 for t in p.tasks if t.ebn0_db == worst_point),
    )


def main() -> None:
    base = plan.Inputs(
        s3_bucket="bench",
        num_tasks=DEFAULTS["num_tasks"],
        ebn0_db=tuple(float(x) for x in DEFAULTS["ebn0_db"]),
        max_bits_per_task=DEFAULTS["max_bits_per_task"],
        target_errors=DEFAULTS["target_errors"],
        allocation="adaptive",
        seed=1,
        s3_prefix_task_results="t",
        s3_prefix_aggregate_results="a",
    )
    print(
        f"Default study: {base.num_tasks} tasks, Eb/N0 {list(base.ebn0_db)} dB, "
        f"max_bits_per_task {base.max_bits_per_task:.3g}, target_errors {base.target_errors}; "
        f"makespan on {SLOTS} slots (6 instances x 4)"
    )
    rows = [
        figures("equal (original: every task all its bits)", _replace(base, "equal", 0)),
        figures("equal + early stop (target split)", _replace(base, "equal", base.target_errors)),
        figures("adaptive (the default)", base),
    ]
    header = (
        f"{'allocation':44} {'bits':>9} {'worst-pt errors':>15} {'sim errors (p5)':>17} "
        f"{'tasks@worst':>11} {'longest task':>12} {'makespan':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.name:44} {r.bits:9.3g} {r.worst_errors:15.0f} "
            f"{r.sim_worst_mean:9.0f} ({r.sim_worst_p5:4.0f}) {r.tasks_at_worst:11d} "
            f"{r.longest_task:12.3g} {r.makespan_bits:9.3g}"
        )
    equal, _, adaptive = rows
    print(f"worst point: {equal.worst_point:g} dB (errors counted there = its precision)")
    print(
        f"adaptive / equal: bits {adaptive.bits / equal.bits:.3f} (goal <= 0.2; simulated "
        f"{adaptive.sim_bits / equal.sim_bits:.3f}), worst-point errors "
        f"{adaptive.worst_errors / equal.worst_errors:.2f}x (goal >= 1; simulated "
        f"{adaptive.sim_worst_mean / equal.sim_worst_mean:.2f}x), longest task "
        f"{adaptive.longest_task / equal.longest_task:.2f}x, makespan "
        f"{adaptive.makespan_bits / equal.makespan_bits:.3f}x"
    )
    p = plan.plan_study(base, "bench")
    per_point: dict[float, list[plan.TaskSpec]] = {}
    for t in p.tasks:
        per_point.setdefault(t.ebn0_db, []).append(t)
    print("adaptive plan per point: tasks, target errors per task, bit cap per task")
    for x, ts in sorted(per_point.items()):
        targets = sorted({t.target_errors for t in ts})
        caps = sorted({t.max_bits for t in ts})
        print(
            f"  {x:5g} dB: {len(ts):3d} tasks, target {'/'.join(map(str, targets)):>9}, "
            f"cap {'/'.join(f'{c:.3g}' for c in caps)}"
        )


def _replace(study: plan.Inputs, allocation: str, target_errors: int) -> plan.Inputs:
    from dataclasses import replace

    return replace(study, allocation=allocation, target_errors=target_errors)


if __name__ == "__main__":
    main()
