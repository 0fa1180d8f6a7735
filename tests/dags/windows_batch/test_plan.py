"""plan.py: allocation, seeds, result keys, and the argv checked against bersim's own parser."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bersim.cli import build_parser
from windows_batch import plan
from windows_batch.params import DEFAULTS

RUN_ID = "manual__2026-01-02T03:04:05.678901+00:00"
DEFAULT_STUDY = plan.Study(
    s3_bucket="my-results",
    num_tasks=DEFAULTS["num_tasks"],
    ebn0_db=tuple(float(x) for x in DEFAULTS["ebn0_db"]),
    max_bits_per_task=DEFAULTS["max_bits_per_task"],
    target_errors=DEFAULTS["target_errors"],
    allocation=DEFAULTS["allocation"],
    seed=DEFAULTS["seed"],
    s3_prefix_task_results="sim/task_results",
    s3_prefix_aggregate_results="sim/aggregate_results",
)


def study(**changes: object) -> plan.Study:
    return dataclasses.replace(DEFAULT_STUDY, **changes)  # type: ignore[arg-type]


def tasks_per_point(p: plan.Plan) -> dict[float, int]:
    counts: dict[float, int] = {}
    for t in p.tasks:
        counts[t.ebn0_db] = counts.get(t.ebn0_db, 0) + 1
    return counts


@pytest.mark.parametrize(
    ("num_tasks", "points", "expected"),
    [
        pytest.param(200, 8, [25] * 8, id="even"),
        pytest.param(10, 3, [4, 3, 3], id="remainder-to-first-points"),
        pytest.param(3, 3, [1, 1, 1], id="one-each"),
    ],
)
def test_equal_split(num_tasks: int, points: int, expected: list[int]) -> None:
    ebn0 = tuple(float(x) for x in range(points))
    p = plan.plan_study(
        study(num_tasks=num_tasks, ebn0_db=ebn0, allocation="equal", target_errors=0), RUN_ID
    )
    assert [tasks_per_point(p)[x] for x in ebn0] == expected
    assert all(t.max_bits == DEFAULT_STUDY.max_bits_per_task for t in p.tasks)
    assert all(t.target_errors == 0 for t in p.tasks)


def test_equal_splits_target_errors_among_a_points_tasks() -> None:
    p = plan.plan_study(study(num_tasks=7, ebn0_db=(0.0, 4.0), allocation="equal"), RUN_ID)
    by_point: dict[float, list[int]] = {}
    for t in p.tasks:
        by_point.setdefault(t.ebn0_db, []).append(t.target_errors)
    assert sorted(by_point[0.0]) == [250, 250, 250, 250]
    assert sorted(by_point[4.0]) == [333, 333, 334]


def test_adaptive_gives_hard_points_the_tasks_and_lets_easy_points_stop_early() -> None:
    p = plan.plan_study(DEFAULT_STUDY, RUN_ID)
    counts = tasks_per_point(p)
    assert len(p.tasks) == 200
    assert counts[12.0] > counts[11.0] > counts[0.0]
    assert counts[12.0] >= 150
    easy = [t for t in p.tasks if t.ebn0_db == 0.0]
    assert easy[0].target_errors == DEFAULT_STUDY.target_errors
    assert easy[0].max_bits < 100_000  # 0 dB: ~13k bits give 1000 errors
    # Every point's targets add up to target_errors; no cap beyond max_bits_per_task.
    for x in DEFAULT_STUDY.ebn0_db:
        assert sum(t.target_errors for t in p.tasks if t.ebn0_db == x) == 1000
    assert max(t.max_bits for t in p.tasks) <= DEFAULT_STUDY.max_bits_per_task
    # Longest tasks first (the scheduler starts them first).
    caps = [t.max_bits for t in p.tasks]
    assert caps == sorted(caps, reverse=True)


def test_adaptive_meets_its_goal_for_the_default_study() -> None:
    """Same or better worst-point errors than equal, <= 1/5 of the bits, shorter makespan."""
    equal = plan.allocate(
        ebn0_db=DEFAULT_STUDY.ebn0_db,
        num_tasks=200,
        max_bits=DEFAULT_STUDY.max_bits_per_task,
        target_errors=0,
        allocation="equal",
    )
    adaptive = plan.allocate(
        ebn0_db=DEFAULT_STUDY.ebn0_db,
        num_tasks=200,
        max_bits=DEFAULT_STUDY.max_bits_per_task,
        target_errors=DEFAULT_STUDY.target_errors,
        allocation="adaptive",
    )
    worst_equal = min(p.expected_errors for p in equal)
    worst_adaptive = min(p.expected_errors for p in adaptive)
    bits_equal = sum(p.expected_bits for p in equal)
    bits_adaptive = sum(p.expected_bits for p in adaptive)
    assert worst_adaptive >= worst_equal
    assert bits_adaptive <= bits_equal / 5
    assert max(p.longest_bits for p in adaptive) < max(p.longest_bits for p in equal)


def test_adaptive_without_target_errors_runs_full_tasks_worst_point_first() -> None:
    p = plan.plan_study(study(target_errors=0), RUN_ID)
    assert all(
        t.max_bits == DEFAULT_STUDY.max_bits_per_task and t.target_errors == 0 for t in p.tasks
    )
    assert tasks_per_point(p)[12.0] > tasks_per_point(p)[11.0] > tasks_per_point(p)[0.0]


def test_seeds_are_distinct_deterministic_and_follow_the_run_seed() -> None:
    first = plan.plan_study(DEFAULT_STUDY, RUN_ID)
    again = plan.plan_study(DEFAULT_STUDY, "another-run")
    other = plan.plan_study(study(seed=2), RUN_ID)
    seeds = [t.seed for t in first.tasks]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [t.seed for t in again.tasks]
    assert not set(seeds) & {t.seed for t in other.tasks}
    assert all(0 <= s <= plan.SEED_MAX for s in seeds)


def test_task_seeds_stay_distinct_for_many_tasks() -> None:
    seeds = plan.task_seeds(12345, 1024)
    assert len(set(seeds)) == 1024


def test_result_keys_are_per_run_and_per_task() -> None:
    p = plan.plan_study(study(num_tasks=12), RUN_ID)
    prefix = f"s3://my-results/sim/task_results/{RUN_ID}/"
    assert [t.output_uri for t in p.tasks] == [f"{prefix}task-{i:05d}.json" for i in range(12)]
    assert p.input_prefix_uri == prefix
    assert p.output_prefix_uri == f"s3://my-results/sim/aggregate_results/{RUN_ID}/"
    assert p.results_png_uri.endswith(f"/{RUN_ID}/results.png")


@pytest.mark.parametrize("allocation", plan.ALLOCATIONS)
def test_every_planned_argv_parses_with_bersims_parser(allocation: str) -> None:
    parser = build_parser()
    s = study(allocation=allocation, ebn0_db=(-3.5, 0.0, 2.25, 7.0, 12.0), num_tasks=40)
    p = plan.plan_study(s, RUN_ID)
    for task in p.tasks:
        args = parser.parse_args(task.argv)
        assert args.command == "simulate"
        assert args.ebn0_db == task.ebn0_db
        assert args.max_bits == task.max_bits
        assert args.seed == task.seed
        assert args.target_errors == task.target_errors
        assert args.task_index == task.index
        assert args.output == task.output_uri
    agg = parser.parse_args(p.aggregate_command)
    assert agg.command == "aggregate"
    assert agg.input == p.input_prefix_uri
    assert agg.output == p.output_prefix_uri
    assert agg.expected_tasks == 40


def test_format_number_round_trips() -> None:
    for value in (0.0, 12.0, -3.5, 0.1, 1e-05, 29.999999):
        assert float(plan.format_number(value)) == value
    assert plan.format_number(12.0) == "12"


def test_poisson_helpers() -> None:
    # mu with P(Poisson(mu) < 1) = e^-mu = 1 %: mu = ln(100).
    assert plan.poisson_mean_for(1) == pytest.approx(math.log(100), rel=1e-6)
    assert plan.expected_counted(4.0, 1) == pytest.approx(1 - math.exp(-4.0))
    assert plan.expected_counted(5.0, 0) == 5.0


def test_allocate_refuses_more_points_than_tasks() -> None:
    with pytest.raises(ValueError, match="at least one task per point"):
        plan.allocate(
            ebn0_db=(0.0, 1.0, 2.0),
            num_tasks=2,
            max_bits=10**6,
            target_errors=0,
            allocation="equal",
        )
