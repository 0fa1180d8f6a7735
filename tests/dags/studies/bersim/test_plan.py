"""studies/bersim/plan.py: allocation, seeds, result keys, the Poisson tails, and the argv
checked against bersim's own parser."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator
from typing import Any

import pytest

from bersim.cli import build_parser
from studies.bersim import plan
from studies.bersim.form import DEFAULTS

RUN_ID = "manual__2026-01-02T03:04:05.678901+00:00"
DEFAULT_STUDY = plan.Inputs(
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


def study(**changes: object) -> plan.Inputs:
    return dataclasses.replace(DEFAULT_STUDY, **changes)  # type: ignore[arg-type]


def tasks_per_point(p: plan.Plan) -> dict[float, int]:
    counts: dict[float, int] = {}
    for t in p.tasks:
        counts[t.ebn0_db] = counts.get(t.ebn0_db, 0) + 1
    return counts


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """The planner's memoized tails emptied before and after: each test sees its own work."""
    plan.poisson_mean_for.cache_clear()
    plan._one_task.cache_clear()
    yield
    plan.poisson_mean_for.cache_clear()
    plan._one_task.cache_clear()


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


def assert_parses_back(p: plan.Plan) -> None:
    """Every planned command, read by bersim's own parser, gives back what was planned."""
    parser = build_parser()
    for task in p.tasks:
        assert task.argv == ["python", "-m", "bersim", *task.args]
        args = parser.parse_args(task.args)
        assert args.command == "simulate"
        assert args.ebn0_db == task.ebn0_db
        assert args.max_bits == task.max_bits
        assert args.seed == task.seed
        assert args.target_errors == task.target_errors
        assert args.task_index == task.index
        assert args.output == task.output_uri
    assert p.simulate_commands == [task.args for task in p.tasks]
    agg = parser.parse_args(p.aggregate_command)
    assert agg.command == "aggregate"
    assert agg.input == p.input_prefix_uri
    assert agg.output == p.output_prefix_uri
    assert agg.expected_tasks == len(p.tasks)


@pytest.mark.parametrize("allocation", plan.ALLOCATIONS)
def test_every_planned_argv_parses_with_bersims_parser(allocation: str) -> None:
    s = study(allocation=allocation, ebn0_db=(-3.5, 0.0, 2.25, 7.0, 12.0), num_tasks=40)
    p = plan.plan_study(s, RUN_ID)
    assert len(p.tasks) == 40
    assert_parses_back(p)


@pytest.mark.parametrize("ebn0_db", [-5e-05, -1e-07, -0.5, -10.0, -2.5e-3], ids=repr)
def test_small_negative_ebn0_parses_with_bersims_parser(ebn0_db: float) -> None:
    """Issue 17 point 9: Python 3.12's argparse reads `--ebn0-db -5e-05` as two options (exit
    2, final, for every task of that point); `--ebn0-db=-5e-05` is one option and its value."""
    p = plan.plan_study(study(ebn0_db=(ebn0_db, 4.0), num_tasks=4), RUN_ID)
    assert {t.ebn0_db for t in p.tasks} == {ebn0_db, 4.0}
    assert_parses_back(p)


def test_format_number_round_trips() -> None:
    for value in (0.0, 12.0, -3.5, 0.1, 1e-05, -5e-05, 29.999999):
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


# --- Issue 17 point 7: bounded planning cost, and the same plans as before --------------------


class LgammaCounter:
    """Stands in for the planner's `math`: counts lgamma calls, one per term of an exact
    Poisson sum, and stops the test once `budget` is spent (the old code would run for hours)."""

    def __init__(self, budget: int) -> None:
        self.calls = 0
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        return getattr(math, name)

    def lgamma(self, x: float) -> float:
        self.calls += 1
        if self.calls > self.budget:
            raise AssertionError(f"more than {self.budget} terms of exact Poisson sums")
        return math.lgamma(x)


@pytest.mark.timeout(120)  # a guard against a slow path that sums without lgamma
@pytest.mark.usefixtures("fresh_caches")
@pytest.mark.parametrize("allocation", plan.ALLOCATIONS)
def test_planning_a_billion_errors_sums_no_exact_tails(
    allocation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """target_errors at the form's maximum (10^9): every task's share is far beyond the exact
    sums' limit, so planning computes no term of them (the old code summed up to 10^9 terms
    per step of a 40-step bisection)."""
    counter = LgammaCounter(budget=1_000_000)
    monkeypatch.setattr(plan, "math", counter)
    p = plan.plan_study(study(target_errors=10**9, allocation=allocation), RUN_ID)
    task_bits = p.expected_task_bits
    assert counter.calls == 0
    assert len(p.tasks) == 200
    assert min(t.target_errors for t in p.tasks) > plan.EXACT_TAIL_LIMIT
    for x in DEFAULT_STUDY.ebn0_db:
        assert sum(t.target_errors for t in p.tasks if t.ebn0_db == x) == 10**9
    # Shares of millions of errors: a task stops at its share, or runs to its cap if it cannot
    # get there, almost surely (the Poisson spread is a few thousandths of a percent).
    for task, bits in zip(p.tasks, task_bits, strict=True):
        ber = plan.ber_theory(task.ebn0_db)
        assert bits == pytest.approx(min(task.max_bits, task.target_errors / ber), rel=1e-5)


def exact_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner with exact sums at every size (the code before scipy's formulas)."""
    monkeypatch.setattr(plan, "EXACT_TAIL_LIMIT", 10**12)
    plan.poisson_mean_for.cache_clear()
    plan._one_task.cache_clear()


THRESHOLD_ERRORS = [900, 950, 999, 1000, 1001, 1002, 1050, 1100]


@pytest.mark.usefixtures("fresh_caches")
def test_scipy_tails_agree_with_the_exact_sums_around_the_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scipy_means = {k: plan.poisson_mean_for(k) for k in THRESHOLD_ERRORS}
    mus = [(t, t * f) for t in THRESHOLD_ERRORS for f in (0.5, 0.9, 1.0, 1.07, 1.2, 2.0)]
    scipy_counted = [plan.expected_counted(mu, t) for t, mu in mus]
    exact_only(monkeypatch)
    for k, mean in scipy_means.items():
        # The exact bisection stops within ~3e-10 of the root: far tighter than a bit cap.
        assert mean == pytest.approx(plan.poisson_mean_for(k), rel=1e-10, abs=0), k
    for (t, mu), counted in zip(mus, scipy_counted, strict=True):
        assert counted == pytest.approx(plan.expected_counted(mu, t), rel=1e-10, abs=0), (t, mu)


@pytest.mark.usefixtures("fresh_caches")
@pytest.mark.parametrize(
    ("allocation", "ebn0_db", "num_tasks"),
    [("adaptive", (9.0,), 3), ("equal", (4.0, 9.0), 6)],
    ids=["adaptive", "equal"],
)
def test_plans_across_the_threshold_match_the_exact_plans(
    allocation: str, ebn0_db: tuple[float, ...], num_tasks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shares of 1000 (exact) and 1001 (scipy) errors: the same plan as exact sums, within a
    bit per cap."""
    s = study(num_tasks=num_tasks, ebn0_db=ebn0_db, target_errors=3002, allocation=allocation)
    fast = plan.plan_study(s, RUN_ID)
    assert {t.target_errors for t in fast.tasks} == {1000, 1001}
    exact_only(monkeypatch)
    exact = plan.plan_study(s, RUN_ID)
    assert [(t.ebn0_db, t.target_errors, t.seed) for t in fast.tasks] == [
        (t.ebn0_db, t.target_errors, t.seed) for t in exact.tasks
    ]
    for a, b in zip(fast.tasks, exact.tasks, strict=True):
        assert abs(a.max_bits - b.max_bits) <= 1
    assert fast.expected_bits == pytest.approx(exact.expected_bits, rel=1e-9)


def plan_digest(p: plan.Plan) -> str:
    """SHA-256 of every task's (index, Eb/N0, bit cap, target, seed), in task order."""
    blob = "".join(
        f"{t.index},{t.ebn0_db!r},{t.max_bits},{t.target_errors},{t.seed};" for t in p.tasks
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# Computed with the planner of commit 4141652 (dags/windows_batch/plan.py, before scipy's tails;
# its Study had these fields), plan_study(<inputs>, "r") and plan_digest above.
PLANS_BEFORE_SCIPY = [
    pytest.param(
        {}, "527dd0ead639fd72d2232b1697f3a1a5a3b9d9e02503efcd1bb367d160c6fd14", id="default"
    ),
    pytest.param(
        {"allocation": "equal"},
        "e6e75e63baed680afb126ce35f6681e0195573f7915eb4bb569cfb5ed01007c1",
        id="equal",
    ),
    pytest.param(
        {"target_errors": 0},
        "8cd98e2dd3b6833307b7ed05a72fb18a6c3fa5098a2fdeb9a04139f532a54f2c",
        id="no-early-stop",
    ),
    pytest.param(
        {"num_tasks": 8},
        "ad9c715cbbdc406ef2e1d65346389d593b1bc93ac64d44982445228045da12fb",
        id="one-task-per-point-1000-errors-each",
    ),
]


@pytest.mark.usefixtures("fresh_caches")
@pytest.mark.parametrize(("changes", "digest"), PLANS_BEFORE_SCIPY)
def test_plans_are_the_same_as_before_scipys_tails(changes: dict[str, Any], digest: str) -> None:
    p = plan.plan_study(study(**changes), "r")
    assert plan_digest(p) == digest
