"""Planning a study: which task simulates which Eb/N0 point, with how many bits and which seed.

Pure Python (no Airflow, no AWS, no numpy; scipy only for Poisson tails beyond 1000 errors):
the study's `plan` calls `plan_study`, the unit tests and benchmarks/bench_plan.py call it
directly. The command line each task gets is built here and only here (`simulate_argv`,
`aggregate_argv`); it is the contract with the container (`python -m bersim ...`), and the
tests parse it with bersim's own parser. Every option is written `--name=value`, so that a
value such as `-5e-05` can never be read as an option.

Allocation
- `equal`: every Eb/N0 point gets the same number of tasks (the remainder goes to the first
  points) and every task `max_bits_per_task` bits; `target_errors` (errors wanted per point) is
  split among the point's tasks, so a task stops once it has counted its share.
- `adaptive`: theory says how many bits each point needs to count `target_errors` errors
  (BER of BPSK over AWGN = 0.5 erfc(sqrt(Eb/N0))). Tasks go one at a time (1) to the point
  whose expected error count is furthest below its target (worst point first), and once every
  point can reach its target, (2) to the point whose tasks are the longest, which shortens the
  makespan without adding bits. Each task's early-stop target is its share of the point's
  target, and its bit cap is the bits within which it reaches that share with 99 % probability
  (Poisson quantile), never more than `max_bits_per_task`: easy points stop after a few
  thousand bits and no task straggles far beyond its expected length.
  With `target_errors` = 0 (no early stop) every task runs `max_bits_per_task` bits and the
  tasks go to the points with the fewest expected errors (worst point first).
Tasks are numbered longest first, so the scheduler starts the long ones first.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

ALLOCATIONS = ("adaptive", "equal")
SEED_MAX = 2**32 - 2
"""Largest seed bersim accepts (Octave's generator state is reduced modulo 2**32 - 1)."""
STRAGGLER_PROBABILITY = 0.01
"""A task's bit cap is reached before its early-stop target with at most this probability."""
MIN_TASK_BITS = 10_000
"""No task is planned shorter than this: below it the start-up dwarfs the work anyway."""
_TARGET_REACHED = 1.0 - 2 * STRAGGLER_PROBABILITY

EXACT_TAIL_LIMIT = 1000
"""Up to this many errors per task, Poisson tails are summed term by term (the plans the study
has always made); beyond, scipy's regularized gamma functions give them in constant time."""
PROGRAM = ("python", "-m", "bersim")
"""How the container (and the local backend) starts bersim."""


@dataclass(frozen=True)
class Inputs:
    """A validated trigger form (see form.py), the input of the planner.

    ebn0_db: the Eb/N0 points in dB; max_bits_per_task: bit budget of one task;
    target_errors: errors wanted per point before it stops early (0 = no early stop);
    allocation: "adaptive" or "equal"; seed: the run's seed (task seeds derive from it).
    """

    s3_bucket: str
    num_tasks: int
    ebn0_db: tuple[float, ...]
    max_bits_per_task: int
    target_errors: int
    allocation: str
    seed: int
    s3_prefix_task_results: str
    s3_prefix_aggregate_results: str


@dataclass(frozen=True)
class TaskSpec:
    """One simulation task: its point, bit cap, early-stop target, seed and output URI."""

    index: int
    ebn0_db: float
    max_bits: int
    target_errors: int
    seed: int
    output_uri: str

    @property
    def argv(self) -> list[str]:
        """The full command line (program included) of this task."""
        return [*PROGRAM, *self.args]

    @property
    def args(self) -> list[str]:
        """bersim's arguments (what its parser reads)."""
        return simulate_argv(
            ebn0_db=self.ebn0_db,
            max_bits=self.max_bits,
            seed=self.seed,
            target_errors=self.target_errors,
            task_index=self.index,
            output_uri=self.output_uri,
        )


@dataclass(frozen=True)
class Plan:
    """The whole fan-out of one run, plus where its results go."""

    tasks: list[TaskSpec]
    input_prefix_uri: str
    output_prefix_uri: str
    expected_bits: float
    expected_errors: dict[float, float] = field(default_factory=dict)

    @property
    def expected_task_bits(self) -> list[float]:
        """Each task's expected simulated bits, in task order (for the time and cost estimate)."""
        return [expected_task_bits(task) for task in self.tasks]

    @property
    def simulate_commands(self) -> list[list[str]]:
        """bersim's arguments of each task, in task order."""
        return [task.args for task in self.tasks]

    @property
    def aggregate_command(self) -> list[str]:
        """bersim's arguments of the aggregate."""
        return aggregate_argv(
            input_prefix_uri=self.input_prefix_uri,
            output_prefix_uri=self.output_prefix_uri,
            expected_tasks=len(self.tasks),
        )

    @property
    def results_png_uri(self) -> str:
        return self.output_prefix_uri + "results.png"


def format_number(value: float) -> str:
    """A number as bersim's parser reads it back exactly: ints without a decimal point."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def simulate_argv(
    *,
    ebn0_db: float,
    max_bits: int,
    seed: int,
    target_errors: int,
    task_index: int,
    output_uri: str,
) -> list[str]:
    """`bersim simulate ...` arguments (without `python -m bersim`), each `--name=value`."""
    return [
        "simulate",
        f"--ebn0-db={format_number(ebn0_db)}",
        f"--max-bits={int(max_bits)}",
        f"--seed={int(seed)}",
        f"--target-errors={int(target_errors)}",
        f"--task-index={int(task_index)}",
        f"--output={output_uri}",
    ]


def aggregate_argv(
    *, input_prefix_uri: str, output_prefix_uri: str, expected_tasks: int
) -> list[str]:
    """`bersim aggregate ...` arguments for the run's prefixes, each `--name=value`."""
    return [
        "aggregate",
        f"--input={input_prefix_uri}",
        f"--output={output_prefix_uri}",
        f"--expected-tasks={int(expected_tasks)}",
    ]


def run_prefix_uri(bucket: str, prefix: str, run_id: str) -> str:
    """`s3://<bucket>/<prefix>/<run_id>/`: every run writes under its own prefix.

    The run id is used as it is (it contains ':' and '+', which S3 keys and POSIX paths allow),
    so the keys can be found from the run id shown in the UI.
    """
    return f"s3://{bucket}/{prefix.strip('/')}/{run_id}/"


def task_output_uri(prefix_uri: str, index: int) -> str:
    return f"{prefix_uri}task-{index:05d}.json"


def ber_theory(ebn0_db: float) -> float:
    """Bit error probability of BPSK over AWGN at `ebn0_db` dB."""
    return 0.5 * math.erfc(math.sqrt(10.0 ** (ebn0_db / 10.0)))


def task_seeds(seed: int, count: int) -> list[int]:
    """`count` distinct seeds in [0, SEED_MAX], a fixed function of the run's seed and index."""
    seeds: list[int] = []
    used: set[int] = set()
    for index in range(count):
        digest = hashlib.blake2b(f"bersim:{seed}:{index}".encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "big") % (SEED_MAX + 1)
        while value in used:  # astronomically rare; keeps seeds distinct within a run
            value = (value + 1) % (SEED_MAX + 1)
        used.add(value)
        seeds.append(value)
    return seeds


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` whole numbers differing by at most 1, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


def _poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu), summed in log space (no underflow for large mu)."""
    if k < 0:
        return 0.0
    if mu <= 0:
        return 1.0
    log_mu = math.log(mu)
    return min(1.0, sum(math.exp(j * log_mu - mu - math.lgamma(j + 1)) for j in range(k + 1)))


@functools.lru_cache(maxsize=4096)
def poisson_mean_for(errors: int, probability: float = STRAGGLER_PROBABILITY) -> float:
    """The expected error count mu at which P(fewer than `errors` errors) = `probability`.

    A task whose cap gives it mu expected errors reaches its target of `errors` before the cap
    in all but `probability` of runs. P(Poisson(mu) <= k - 1) is the regularized upper gamma
    function Q(k, mu), so mu is its inverse in mu: beyond EXACT_TAIL_LIMIT errors scipy's
    gammainccinv gives it in constant time (a bisection over a sum of k terms took hours at
    10^9 errors).
    """
    if errors > EXACT_TAIL_LIMIT:
        from scipy.special import gammainccinv  # noqa: PLC0415 (plan time only)

        return float(gammainccinv(errors, probability))
    low, high = float(errors), float(errors) + 10.0 * math.sqrt(errors) + 20.0
    for _ in range(40):
        mid = (low + high) / 2
        if _poisson_cdf(errors - 1, mid) > probability:
            low = mid
        else:
            high = mid
    return high


def expected_counted(mu: float, target: int) -> float:
    """E[min(X, target)] for X ~ Poisson(mu): the errors a task with that target expects."""
    if target <= 0 or mu <= 0:
        return max(mu, 0.0)
    if target > EXACT_TAIL_LIMIT:
        # E[min(X, t)] = mu P(X <= t - 2) + t P(X >= t), with P(X <= k) = Q(k + 1, mu).
        from scipy.special import gammaincc  # noqa: PLC0415 (plan time only)

        return float(mu * gammaincc(target - 1, mu) + target * (1.0 - gammaincc(target, mu)))
    # E[min(X, t)] = sum_{j<t} P(X > j); one pass with a running CDF.
    log_mu = math.log(mu)
    total = cdf = 0.0
    for j in range(target):
        cdf += math.exp(j * log_mu - mu - math.lgamma(j + 1))
        total += max(0.0, 1.0 - cdf)
    return total


def expected_task_bits(task: TaskSpec) -> float:
    """Bits a task is expected to simulate: until its early-stop target, at most its cap."""
    ber = ber_theory(task.ebn0_db)
    if task.target_errors <= 0 or ber <= 0:
        return float(task.max_bits)
    counted = expected_counted(task.max_bits * ber, task.target_errors)
    return min(float(task.max_bits), counted / ber)


@dataclass(frozen=True)
class PointTasks:
    """The tasks of one Eb/N0 point: (max_bits, target_errors) per task, and expectations."""

    ebn0_db: float
    tasks: tuple[tuple[int, int], ...]
    expected_errors: float
    expected_bits: float

    @property
    def longest_bits(self) -> int:
        return max(bits for bits, _ in self.tasks)


@functools.lru_cache(maxsize=4096)
def _one_task(share: int, ber: float, max_bits: int, cap_bits: bool) -> tuple[int, float, float]:
    """A task with an early-stop target of `share` errors: (bit cap, errors, bits) expected."""
    cap = max_bits
    if cap_bits and ber > 0:
        needed = math.ceil(poisson_mean_for(share) / ber)
        cap = min(max_bits, max(needed, MIN_TASK_BITS))
    counted = expected_counted(cap * ber, share)
    # Bits until the target (counted / ber), or the whole cap if it is reached first.
    spent = min(float(cap), counted / ber) if ber > 0 else float(cap)
    return cap, counted, spent


def point_tasks(
    *,
    ebn0_db: float,
    count: int,
    max_bits: int,
    target_errors: int,
    cap_bits: bool = True,
) -> PointTasks:
    """Plan `count` tasks for one point; `cap_bits` caps each task near its expected length."""
    ber = ber_theory(ebn0_db)
    if target_errors <= 0:
        tasks = ((max_bits, 0),) * count
        return PointTasks(ebn0_db, tasks, count * max_bits * ber, float(count * max_bits))
    shares = split_evenly(target_errors, count) if count <= target_errors else [1] * count
    planned: list[tuple[int, int]] = []
    errors = bits = 0.0
    for share in shares:
        cap, counted, spent = _one_task(share, ber, max_bits, cap_bits)
        planned.append((cap, share))
        errors += counted
        bits += spent
    return PointTasks(ebn0_db, tuple(planned), errors, bits)


def allocate(
    *,
    ebn0_db: Sequence[float],
    num_tasks: int,
    max_bits: int,
    target_errors: int,
    allocation: str,
) -> list[PointTasks]:
    """Split `num_tasks` over the points (see the module docstring); one PointTasks per point."""
    points = len(ebn0_db)
    if points == 0 or num_tasks < points:
        raise ValueError(f"need at least one task per point: {num_tasks} tasks, {points} points")
    if allocation == "equal":
        counts = split_evenly(num_tasks, points)
        return [
            point_tasks(
                ebn0_db=x, count=c, max_bits=max_bits, target_errors=target_errors, cap_bits=False
            )
            for x, c in zip(ebn0_db, counts, strict=True)
        ]
    if allocation != "adaptive":
        raise ValueError(f"unknown allocation {allocation!r}")

    def plan(x: float, count: int) -> PointTasks:
        return point_tasks(ebn0_db=x, count=count, max_bits=max_bits, target_errors=target_errors)

    counts = [1] * points
    current = [plan(x, 1) for x in ebn0_db]
    wanted = float(target_errors) if target_errors > 0 else math.inf
    for _ in range(num_tasks - points):
        # (1) The point furthest below its target (relative), hardest first on ties.
        ratios = [
            p.expected_errors / wanted if wanted != math.inf else p.expected_errors for p in current
        ]
        below = [i for i in range(points) if target_errors <= 0 or ratios[i] < _TARGET_REACHED]
        if below:
            chosen = min(below, key=lambda i: (ratios[i], ebn0_db[i] * -1))
        else:
            # (2) Every point reaches its target: shorten the longest tasks, as long as a task
            # still has at least one error of the target to count.
            splittable = [i for i in range(points) if counts[i] < target_errors]
            pool = splittable or list(range(points))
            chosen = max(pool, key=lambda i: (current[i].longest_bits, ebn0_db[i]))
        counts[chosen] += 1
        current[chosen] = plan(ebn0_db[chosen], counts[chosen])
    return current


def plan_study(study: Inputs, run_id: str) -> Plan:
    """Plan every task of a run: points, bit caps, targets, seeds and output keys."""
    input_prefix = run_prefix_uri(study.s3_bucket, study.s3_prefix_task_results, run_id)
    output_prefix = run_prefix_uri(study.s3_bucket, study.s3_prefix_aggregate_results, run_id)
    per_point = allocate(
        ebn0_db=study.ebn0_db,
        num_tasks=study.num_tasks,
        max_bits=study.max_bits_per_task,
        target_errors=study.target_errors,
        allocation=study.allocation,
    )
    # Longest first (stable: point order, then the point's own order).
    unnumbered = [(x.ebn0_db, bits, target) for x in per_point for bits, target in x.tasks]
    if study.allocation == "adaptive":
        unnumbered.sort(key=lambda t: -t[1])
    seeds = task_seeds(study.seed, len(unnumbered))
    tasks = [
        TaskSpec(
            index=i,
            ebn0_db=x,
            max_bits=bits,
            target_errors=target,
            seed=seeds[i],
            output_uri=task_output_uri(input_prefix, i),
        )
        for i, (x, bits, target) in enumerate(unnumbered)
    ]
    return Plan(
        tasks=tasks,
        input_prefix_uri=input_prefix,
        output_prefix_uri=output_prefix,
        expected_bits=sum(p.expected_bits for p in per_point),
        expected_errors={p.ebn0_db: p.expected_errors for p in per_point},
    )
