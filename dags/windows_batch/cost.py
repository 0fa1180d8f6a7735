"""Where a run's time and money go, and what a study will cost before anything scales.

Engine, pure Python: no numpy, no Airflow, and no AWS call of its own (the functions that read
AWS take a boto3 client; `cost_report.py` makes the clients and wires this into the DAG).

Measured, per run (`scale_in`'s log and the run note). Each instance's billed time, from its
launch to its termination, is split into phases that add up to it exactly:
- boot: launched until its ECS container instance registered (scale-out);
- compute: at least one task of the run was running on it (ECS `startedAt` to `stoppedAt`);
- pull: otherwise, a task was pulling the image (ECS `pullStartedAt` to `pullStoppedAt`);
- scale-in: the group had started terminating it (scaling activity "Terminating EC2 instance");
- idle: registered, nothing pulling or running, not yet scaled in.
The line gives the instance-hours by purchase option and type, the cost at the prices below,
and the phases as a mean per instance:
`cluster: 4.9 instance-hours (spot c5.xlarge), about $0.71; boot 11 min, pull 4 min, ...`.
The run note holds at most 1000 characters (Airflow's limit): the line is kept whole there.

Estimated, before scaling (`plan_tasks`). With n instances of `slots` tasks each:
    time = BOOT_S + PULL_S + makespan(task times over n x slots) + SCALE_IN_S
    instance-hours = n x time / 3600, cost = instance-hours x price per instance-hour
The task times come from the study (each chunk's expected seconds, as the study planned its
work items, plus TASK_START_S each); the makespan is the list schedule of the tasks in their
planned order, each to the slot that frees first, which is what the capped fan-out does. All
instances boot and pull in parallel and run until the group scales in at the end.
`cluster_size: auto` takes, among the sizes up to the group's maximum, the one that costs least
while its time is at most AUTO_SLOWDOWN x the fastest size's (ties: the faster one). More
instances than the tasks can fill at once only cost more, so sizes stop at ceil(tasks / slots).

Prices (USD per instance-hour, Windows licence included). On-demand: the table below, AWS's
EC2 On-Demand list prices for Windows in US East (N. Virginia) as published in 2025 (the Linux
rate plus the licence-included Windows fee of 0.046 USD per vCPU-hour); this project never
fetches them (no Price List API call): set PRICES for another region or when they change.
Spot: `ec2:DescribeSpotPriceHistory` (product "Windows", the price in effect now, the mean over
Availability Zones) when PRICE_SOURCE is `aws` and the call succeeds, otherwise
SPOT_PRICE_FRACTION x the on-demand price (0.7: the Windows licence, about half of the price,
is not discounted on Spot; the compute part typically 60 % or more). EC2 bills Windows
instances per second with a 60-second minimum per launch.

Settings (AIRFLOW__WINDOWS_BATCH__<KEY>; default in brackets):
- INSTANCE_TYPES [c5.xlarge]: comma-separated instance types of the group (one size); the
  estimate prices the first on-demand and the mean of their Spot prices.
- PURCHASE_OPTION [on-demand]: `on-demand` or `spot`, what the group launches (with Spot, the
  first ON_DEMAND_BASE [0] instances are on-demand); measured runs read each instance's own.
- PRICES [the table above]: `type=USD per hour,...`, merged over the table.
- SPOT_PRICE_FRACTION [0.7]: Spot price / on-demand price when no Spot price is known.
- PRICE_SOURCE [aws; local backend: table]: `aws` asks DescribeSpotPriceHistory, `table` not.
- BOOT_S [900]: launch to ECS registration of a Windows instance. AWS quotes 15 minutes or
  more without EC2 Fast Launch (which launches "up to 65 % faster"); set it lower with a
  baked, Fast Launch AMI.
- PULL_S [300]: the image pull on a fresh instance (several GB of Windows layers from ECR,
  extracted on the instance); about 0 when the AMI has the image already.
- SCALE_IN_S [60]: from the scale-in request until the instances stop being billed.
- TASK_START_S [30]: per task, the container's start, the study's program start-up, polling.
- AUTO_SLOWDOWN [1.25]: `cluster_size: auto` may take up to this factor of the fastest time.
- WARM_POOL_SIZE [0]: stopped, pre-initialized instances the group's warm pool keeps (ecs.yaml
  WarmPoolSize). When it covers the cluster (size <= pool) the estimate boots in WARM_START_S.
- WARM_START_S [120]: start of a warm pool instance from stopped to ECS registration (Windows
  starting an instance it has initialized once, then the agent registering): an assumption,
  not measured here.
- ROOT_VOLUME_GIB [100], EBS_USD_PER_GB_MONTH [0.08]: what a stopped pool instance bills (its
  gp3 root volume; us-east-1 2025 list price).
- QUEUED_S [30]: trigger to scale-out request (plan_tasks and the scheduler), for the estimated
  time to the first task.

Warm pool (ecs.yaml WarmPoolSize). A scale-out starts pool instances from stopped; each one used
is replaced after scale-in by a new launch into the pool, which runs a cold boot (BOOT_S, the
AMI's) before it is stopped: that refill is priced with the run, n_from_pool x BOOT_S at the
on-demand price (and EC2's 60-second minimum). The stopped pool bills only its EBS volumes,
WARM_POOL_SIZE x ROOT_VOLUME_GIB x EBS_USD_PER_GB_MONTH / 730 per hour, whether studies run or not.

Time to the first task (measured, per run). From the trigger to the first task's container
start, split into: queued (trigger to scale_out's first request), boot (a cold launch) or start
(from the warm pool) until the instance went InService, registration (InService to the ECS
agent's registration; 0 when the agent registered first), cluster wait (until RunTask placed the
task: the rest of the cluster and Airflow), pull (RunTask to the image pulled) and container
start. The parts add up to the total. Estimated: QUEUED_S + boot + pull.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The settings (parsed with the DAG file, settings.py) live apart; cost.<name> still finds them.
from windows_batch.cost_settings import (  # noqa: F401 (re-exported)
    AUTO,
    HOURS_PER_MONTH,
    CostSettings,
    CostSettingsError,
    load_cost_settings,
)

PHASES = ("boot", "pull", "compute", "idle", "scale-in")
BILLING_MINIMUM_S = 60.0
"""EC2 per-second billing charges at least this much per instance launch (and per start)."""


PRICES_AS_OF = "us-east-1 2025 table"
SPOT_PRODUCTS = ("Windows", "Windows (Amazon VPC)")
_DESCRIBE_BATCH = 100
_INSTANCE_ID = re.compile(r"\b(i-[0-9a-f]{8,17})\b")


@dataclass(frozen=True)
class Prices:
    """USD per instance-hour by instance type: on-demand, and Spot where one is known."""

    on_demand: Mapping[str, float]
    spot: Mapping[str, float] = field(default_factory=dict)
    spot_fraction: float = 0.7
    spot_source: str = "table"

    def price(self, instance_type: str, purchase: str) -> float | None:
        """The price of one instance-hour, or None if the type is in no table."""
        if purchase == "spot":
            if instance_type in self.spot:
                return self.spot[instance_type]
            on_demand = self.on_demand.get(instance_type)
            return None if on_demand is None else on_demand * self.spot_fraction
        return self.on_demand.get(instance_type)

    @property
    def source(self) -> str:
        if self.spot_source == "aws":
            return f"Spot now, on-demand {PRICES_AS_OF}"
        return PRICES_AS_OF


def prices_from(settings: CostSettings, spot: Mapping[str, float] | None = None) -> Prices:
    """The price table of `settings`, with the Spot prices AWS gave (if any)."""
    return Prices(
        on_demand=dict(settings.on_demand_usd_per_h),
        spot=dict(spot or {}),
        spot_fraction=settings.spot_price_fraction,
        spot_source="aws" if spot else "table",
    )


def spot_prices(ec2: Any, instance_types: Iterable[str], *, now: datetime) -> dict[str, float]:
    """Windows Spot prices in effect at `now`, per type: the mean over Availability Zones.

    DescribeSpotPriceHistory with a start time returns, per zone, the last price change before
    it too (the price in effect then); with StartTime = EndTime = now that is all it returns.
    """
    types = sorted(set(instance_types))
    if not types:
        return {}
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=types, ProductDescriptions=list(SPOT_PRODUCTS), StartTime=now, EndTime=now
    )
    for page in pages:
        for entry in page.get("SpotPriceHistory", []):
            if entry.get("ProductDescription") not in SPOT_PRODUCTS:
                continue  # Linux prices are about half: never let one through
            key = (str(entry["InstanceType"]), str(entry.get("AvailabilityZone", "")))
            stamp, price = entry["Timestamp"], float(entry["SpotPrice"])
            if key not in latest or stamp > latest[key][0]:
                latest[key] = (stamp, price)
    by_type: dict[str, list[float]] = {}
    for (instance_type, _zone), (_stamp, price) in latest.items():
        by_type.setdefault(instance_type, []).append(price)
    return {t: sum(p) / len(p) for t, p in by_type.items()}


@dataclass(frozen=True)
class InstanceSpan:
    """One EC2 instance of the run; times in seconds since the epoch.

    launched_at: billing starts (a warm instance: its start from stopped); registered_at:
    joined the ECS cluster (None: unknown); scale_in_at: the group began terminating it;
    terminated_at: None if still running.
    """

    instance_id: str
    instance_type: str
    purchase: str
    launched_at: float
    registered_at: float | None = None
    scale_in_at: float | None = None
    terminated_at: float | None = None
    origin: str | None = None
    """`warm` (started from the warm pool), `cold` (launched), None (unknown)."""
    in_service_at: float | None = None
    """When its launch activity ended: the group put it InService."""


@dataclass(frozen=True)
class TaskSpan:
    """One ECS task of the run on `instance_id`; ECS's timestamps in seconds since the epoch."""

    instance_id: str | None
    pull_started_at: float | None = None
    pull_stopped_at: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    created_at: float | None = None
    """RunTask placed it."""


def _phase_of(
    moment: float,
    *,
    registered: float,
    computes: Sequence[tuple[float, float]],
    pulls: Sequence[tuple[float, float]],
    scale_in_at: float | None,
) -> str:
    if moment < registered:
        return "boot"
    if any(a <= moment < b for a, b in computes):
        return "compute"
    if any(a <= moment < b for a, b in pulls):
        return "pull"
    if scale_in_at is not None and moment >= scale_in_at:
        return "scale-in"
    return "idle"


def instance_phases(
    instance: InstanceSpan, tasks: Sequence[TaskSpan], *, now: float
) -> dict[str, float]:
    """Seconds of `instance`'s life in each phase (see the module docstring); they add up to it.

    An unknown registration time is taken as the first pull or start of a task on it.
    """
    start = instance.launched_at
    end = instance.terminated_at if instance.terminated_at is not None else now
    seconds = dict.fromkeys(PHASES, 0.0)
    if end <= start:
        return seconds
    mine = [t for t in tasks if t.instance_id == instance.instance_id]
    computes = [(t.started_at, t.stopped_at or end) for t in mine if t.started_at is not None]
    pulls = [
        (t.pull_started_at, t.pull_stopped_at or t.started_at or end)
        for t in mine
        if t.pull_started_at is not None
    ]
    registered = instance.registered_at
    if registered is None:
        firsts = [a for a, _ in pulls + computes]
        registered = min(firsts) if firsts else start
    points = {start, end, min(max(registered, start), end)}
    for a, b in computes + pulls:
        points.update((min(max(a, start), end), min(max(b, start), end)))
    if instance.scale_in_at is not None:
        points.add(min(max(instance.scale_in_at, start), end))
    ordered = sorted(points)
    for a, b in itertools.pairwise(ordered):
        phase = _phase_of(
            (a + b) / 2,
            registered=registered,
            computes=computes,
            pulls=pulls,
            scale_in_at=instance.scale_in_at,
        )
        seconds[phase] += b - a
    return seconds


@dataclass(frozen=True)
class Usage:
    """A run's measured cluster usage (see `usage`)."""

    instances: int
    phase_s: Mapping[str, float]
    """Seconds per phase, summed over the instances."""
    hours: Mapping[tuple[str, str], float]
    """Billed instance-hours by (purchase option, instance type)."""
    cost_usd: float | None
    unpriced: tuple[str, ...]
    wall_s: float
    price_source: str
    tasks: int

    @property
    def instance_hours(self) -> float:
        return sum(self.hours.values())

    def line(self) -> str:
        """`cluster: 4.9 instance-hours (spot c5.xlarge), about $0.71; boot 11 min, ...`."""
        if not self.instances:
            return "cluster: no instances found for this run"
        kinds = _kinds(self.hours)
        cost = "cost unknown" if self.cost_usd is None else f"about ${self.cost_usd:.2f}"
        if self.unpriced:
            cost += f" (no price for {', '.join(self.unpriced)})"
        phases = ", ".join(
            f"{phase} {_minutes(self.phase_s[phase] / self.instances)}" for phase in PHASES
        )
        return (
            f"cluster: {_hours(self.instance_hours)} instance-hours ({kinds}), {cost}; "
            f"{phases} per instance; {self.instances} instance"
            f"{'' if self.instances == 1 else 's'}, {self.tasks} task"
            f"{'' if self.tasks == 1 else 's'}, {_minutes(self.wall_s)} in all; "
            f"prices: {self.price_source}"
        )


def append_to_note(before: str, line: str, *, limit: int) -> str:
    """`before`, a blank line and `line`, in at most `limit` characters: `before` is shortened."""
    if not before:
        return line[:limit]
    room = limit - len(line) - 2
    if len(before) > room:
        before = before[: max(0, room - 1)] + "…"
    return f"{before}\n\n{line}"[-limit:]


def _kinds(hours: Mapping[tuple[str, str], float]) -> str:
    """`spot c5.xlarge` for one kind of instance, else `1.2 on-demand c5.xlarge, 3.4 spot ...`."""
    used = sorted((key, h) for key, h in hours.items() if h > 0)
    if len(used) == 1:
        return " ".join(used[0][0])
    return ", ".join(f"{_hours(h)} {purchase} {kind}" for (purchase, kind), h in used)


def _hours(hours: float) -> str:
    return f"{hours:.2g}" if hours < 1 else f"{hours:.1f}"


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"


def usage(
    instances: Sequence[InstanceSpan], tasks: Sequence[TaskSpan], *, now: float, prices: Prices
) -> Usage:
    """Phases, instance-hours and cost of a run's instances and tasks (times: epoch seconds)."""
    phase_s = dict.fromkeys(PHASES, 0.0)
    hours: dict[tuple[str, str], float] = {}
    cost = 0.0
    unpriced: set[str] = set()
    for instance in instances:
        for phase, seconds in instance_phases(instance, tasks, now=now).items():
            phase_s[phase] += seconds
        end = instance.terminated_at if instance.terminated_at is not None else now
        billed_h = max(end - instance.launched_at, BILLING_MINIMUM_S) / 3600
        key = (instance.purchase, instance.instance_type)
        hours[key] = hours.get(key, 0.0) + billed_h
        price = prices.price(instance.instance_type, instance.purchase)
        if price is None:
            unpriced.add(instance.instance_type)
        else:
            cost += billed_h * price
    ends = [i.terminated_at if i.terminated_at is not None else now for i in instances]
    wall = max(ends) - min(i.launched_at for i in instances) if instances else 0.0
    priced_any = len(unpriced) < len({i.instance_type for i in instances})
    return Usage(
        instances=len(instances),
        phase_s=phase_s,
        hours=hours,
        cost_usd=cost if priced_any else None,
        unpriced=tuple(sorted(unpriced)),
        wall_s=max(wall, 0.0),
        price_source=prices.source,
        tasks=len(tasks),
    )


@dataclass(frozen=True)
class FirstTask:
    """Trigger to the first task's start, split into parts that add up to it."""

    total_s: float
    parts: tuple[tuple[str, float], ...]
    origin: str | None
    instances: Mapping[str, int]
    """How many of the run's instances were `warm`, `cold` or of unknown origin."""

    def line(self) -> str:
        """`first task: 3.1 min after the trigger (queued 0.5 min, start from stopped ...)`."""
        parts = ", ".join(f"{name} {_minutes(seconds)}" for name, seconds in self.parts)
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.instances.items()) if n)
        return (
            f"first task: {_minutes(self.total_s)} after the trigger ({parts}); "
            f"instances: {counts or 'none found'}"
        )


def first_task(
    timeline: Timeline, *, triggered_at: float, scale_out_at: float | None
) -> FirstTask | None:
    """The split of trigger -> first task started (module docstring), or None if no task of
    the run started. A point that is not known takes the one before it (its part is 0)."""
    started = [t for t in timeline.tasks if t.started_at is not None]
    if not started:
        return None
    task = min(started, key=lambda t: t.started_at or 0.0)
    host = next((i for i in timeline.instances if i.instance_id == task.instance_id), None)
    origin = host.origin if host is not None else None
    booting = "start from stopped" if origin == "warm" else "boot"
    in_service = host.in_service_at if host is not None else None
    registered = host.registered_at if host is not None else None
    if in_service is None or (registered is not None and registered < in_service):
        # Unknown, or the agent registered while the group still held it: all of it is boot.
        in_service = registered
    pull_done = task.pull_stopped_at or task.pull_started_at
    points = [
        ("queued", scale_out_at),
        (booting, in_service),
        ("registration", registered),
        ("cluster wait", task.created_at),
        ("pull", pull_done),
        ("container start", task.started_at),
    ]
    parts: list[tuple[str, float]] = []
    before = triggered_at
    for name, moment in points:
        at = before if moment is None else max(before, moment)
        parts.append((name, at - before))
        before = at
    counts = {"warm": 0, "cold": 0, "unknown": 0}
    for instance in timeline.instances:
        counts[instance.origin or "unknown"] += 1
    return FirstTask(
        total_s=before - triggered_at, parts=tuple(parts), origin=origin, instances=counts
    )


def makespan_s(task_s: Sequence[float], slots: int) -> float:
    """The tasks in their order, each to the slot that frees first: when the last one ends."""
    if not task_s:
        return 0.0
    free_at = [0.0] * max(1, min(slots, len(task_s)))
    for duration in task_s:
        heapq.heappush(free_at, heapq.heappop(free_at) + duration)
    return max(free_at)


@dataclass(frozen=True)
class PoolUse:
    """What a run does with the warm pool: instances started from it, their refill, its EBS."""

    pool_size: int
    from_pool: int
    cold: int
    refill_boot_s: float
    refill_hours: float
    refill_usd: float | None
    ebs_usd_per_h: float
    root_volume_gib: float

    def line(self, *, measured: bool = False) -> str:
        """`warm pool: 4 of 4 started from stopped; refill 4 x 5.3 min ..., about $0.12; ...`."""
        started = "started" if measured else "start"
        total = self.from_pool + self.cold
        parts = [f"warm pool: {self.from_pool} of {total} {started} from stopped"]
        if self.cold:
            launched = "launched" if measured else "launch"
            parts[0] += f", {self.cold} {launched} cold"
        refill = "unknown" if self.refill_usd is None else f"about ${self.refill_usd:.2f}"
        if self.from_pool:
            parts.append(
                f"refill{' (estimated)' if measured else ''} {self.from_pool} x "
                f"{_minutes(self.refill_boot_s)} cold boot = {_hours(self.refill_hours)} "
                f"instance-hours, {refill}"
            )
        parts.append(
            f"the stopped pool ({self.pool_size} x {self.root_volume_gib:g} GiB EBS) bills "
            f"about ${self.ebs_usd_per_h:.3f}/h"
        )
        return "; ".join(parts)


def pool_use(settings: CostSettings, prices: Prices, *, from_pool: int, cold: int) -> PoolUse:
    """The refill of `from_pool` instances taken from the pool (each replaced by a launch that
    boots cold, BOOT_S, before it is stopped; on-demand: pools take no Spot) and the pool's EBS."""
    refill_h = from_pool * max(settings.boot_s, BILLING_MINIMUM_S) / 3600
    price = prices.price(settings.instance_types[0], "on-demand")
    return PoolUse(
        pool_size=settings.warm_pool_size,
        from_pool=from_pool,
        cold=cold,
        refill_boot_s=settings.boot_s,
        refill_hours=refill_h,
        refill_usd=None if price is None else refill_h * price,
        ebs_usd_per_h=settings.pool_ebs_usd_per_h,
        root_volume_gib=settings.root_volume_gib,
    )


@dataclass(frozen=True)
class Estimate:
    """The estimated time and cost of one run on `size` instances."""

    size: int
    boot_s: float
    pull_s: float
    compute_s: float
    scale_in_s: float
    hours: Mapping[tuple[str, str], float]
    cost_usd: float | None
    price_source: str
    queued_s: float = 0.0
    pool: PoolUse | None = None
    """With a warm pool: what the run takes from it; its refill is in cost_usd."""

    @property
    def wall_s(self) -> float:
        return self.boot_s + self.pull_s + self.compute_s + self.scale_in_s

    @property
    def first_task_s(self) -> float:
        """Trigger to the first task's start: queued, boot (or start from stopped), pull."""
        return self.queued_s + self.boot_s + self.pull_s

    @property
    def instance_hours(self) -> float:
        return sum(self.hours.values())

    def line(self) -> str:
        """`estimate: 4 instances, about 29 min (boot 15 min, ...), 1.9 instance-hours ...`."""
        kinds = _kinds(self.hours)
        cost = "cost unknown" if self.cost_usd is None else f"about ${self.cost_usd:.2f}"
        pool = "" if self.pool is None else f"; {self.pool.line()}"
        return (
            f"estimate: {self.size} instance{'' if self.size == 1 else 's'}, about "
            f"{_minutes(self.wall_s)} (boot {_minutes(self.boot_s)}, pull "
            f"{_minutes(self.pull_s)}, compute {_minutes(self.compute_s)}, scale-in "
            f"{_minutes(self.scale_in_s)}), {_hours(self.instance_hours)} instance-hours "
            f"({kinds}), {cost}{pool}; prices: {self.price_source}"
        )


def estimate(
    task_s: Sequence[float],
    *,
    size: int,
    slots_per_instance: int,
    settings: CostSettings,
    prices: Prices,
) -> Estimate:
    """The time and cost of running tasks of `task_s` seconds on `size` instances.

    With a warm pool that covers the cluster every instance starts from stopped (WARM_START_S);
    one that does not cover it leaves the cold boot setting the time. Either way the instances
    taken from the pool are refilled, and that refill is in the cost.
    """
    compute = makespan_s(task_s, size * slots_per_instance)
    boot = settings.warm_start_s if settings.pool_covers(size) else settings.boot_s
    wall = boot + settings.pull_s + compute + settings.scale_in_s
    on_demand = size
    if settings.purchase_option == "spot":
        on_demand = min(size, settings.on_demand_base)
    # A Spot instance may be any of the types; on-demand uses the first (the group's priority).
    spot_types = settings.instance_types
    first = spot_types[0]
    hours: dict[tuple[str, str], float] = {}
    cost: float | None = 0.0
    billed_h = max(wall, BILLING_MINIMUM_S) / 3600
    groups = [(on_demand, "on-demand", (first,)), (size - on_demand, "spot", spot_types)]
    for count, purchase, types in groups:
        if count <= 0:
            continue
        known = [p for p in (prices.price(t, purchase) for t in types) if p is not None]
        label = types[0] if len(types) == 1 else "/".join(types)
        hours[(purchase, label)] = count * billed_h
        if known and cost is not None:
            cost += count * billed_h * sum(known) / len(known)
        else:
            cost = None
    pool = None
    if settings.warm_pool_size > 0:
        from_pool = min(size, settings.warm_pool_size)
        pool = pool_use(settings, prices, from_pool=from_pool, cold=size - from_pool)
        cost = None if cost is None or pool.refill_usd is None else cost + pool.refill_usd
    return Estimate(
        size=size,
        boot_s=boot,
        pull_s=settings.pull_s,
        compute_s=compute,
        scale_in_s=settings.scale_in_s,
        hours=hours,
        cost_usd=cost,
        price_source=prices.source,
        queued_s=settings.queued_s,
        pool=pool,
    )


@dataclass(frozen=True)
class Sizing:
    """The cluster size for a run: the one asked for, or the one `auto` chose, and its estimate."""

    requested: int | str
    chosen: Estimate
    fastest: Estimate | None = None
    slowdown: float = 1.0

    @property
    def size(self) -> int:
        return self.chosen.size

    def line(self) -> str:
        if self.requested != AUTO or self.fastest is None:
            return f"cluster_size {self.size}; {self.chosen.line()}"
        return (
            f"cluster_size auto -> {self.size} (cheapest within {self.slowdown:g}x of the "
            f"fastest: {self.fastest.size} in {_minutes(self.fastest.wall_s)}); "
            f"{self.chosen.line()}"
        )


def _cost_key(candidate: Estimate) -> tuple[float, float]:
    spend = candidate.cost_usd if candidate.cost_usd is not None else candidate.instance_hours
    return (round(spend, 9), candidate.wall_s)


def size_cluster(
    task_s: Sequence[float],
    *,
    requested: int | str,
    max_size: int,
    slots_per_instance: int,
    settings: CostSettings,
    prices: Prices,
) -> Sizing:
    """The estimate for `requested` instances, or for the size `auto` picks (module docstring)."""

    def at(size: int) -> Estimate:
        return estimate(
            task_s,
            size=size,
            slots_per_instance=slots_per_instance,
            settings=settings,
            prices=prices,
        )

    if requested != AUTO:
        return Sizing(requested=requested, chosen=at(int(requested)))
    useful = max(1, math.ceil(len(task_s) / slots_per_instance))
    candidates = [at(size) for size in range(1, min(max_size, useful) + 1)]
    fastest = min(candidates, key=lambda c: (c.wall_s, c.size))
    allowed = [c for c in candidates if c.wall_s <= settings.auto_slowdown * fastest.wall_s + 1e-9]
    chosen = min(allowed, key=_cost_key)
    return Sizing(requested=AUTO, chosen=chosen, fastest=fastest, slowdown=settings.auto_slowdown)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _batches(items: Sequence[str], size: int = _DESCRIBE_BATCH) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass
class Timeline:
    """What AWS said about a run: its instances and tasks, and what could not be read.

    refills: instances launched into the warm pool since the run began (not the run's, but
    its cost: they replace the ones it took from the pool).
    """

    instances: list[InstanceSpan]
    tasks: list[TaskSpan]
    missing: list[str] = field(default_factory=list)
    refills: list[str] = field(default_factory=list)


@dataclass
class _Facts:
    """Per EC2 instance id, what the sources said so far."""

    registered: dict[str, float | None] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    ec2_of: dict[str, str] = field(default_factory=dict)
    launched: dict[str, float] = field(default_factory=dict)
    scale_in: dict[str, float] = field(default_factory=dict)
    terminated: dict[str, float] = field(default_factory=dict)
    purchases: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    in_service: dict[str, float] = field(default_factory=dict)
    refills: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _read_tasks(ecs: Any, cluster: str, task_arns: Sequence[str], facts: _Facts) -> list[TaskSpan]:
    """DescribeTasks: each task's container instance ARN (for now) and timestamps."""
    wanted = sorted(set(task_arns))
    tasks: list[TaskSpan] = []
    try:
        for batch in _batches(wanted):
            for task in ecs.describe_tasks(cluster=cluster, tasks=batch).get("tasks", []):
                tasks.append(
                    TaskSpan(
                        instance_id=task.get("containerInstanceArn"),
                        pull_started_at=_epoch(task.get("pullStartedAt")),
                        pull_stopped_at=_epoch(task.get("pullStoppedAt")),
                        started_at=_epoch(task.get("startedAt")),
                        stopped_at=_epoch(task.get("stoppedAt")),
                        created_at=_epoch(task.get("createdAt")),
                    )
                )
    except Exception as exc:  # any AWS error: report what the other sources give
        facts.missing.append(f"ECS tasks ({type(exc).__name__})")
    if len(tasks) < len(wanted):
        facts.missing.append(f"{len(wanted) - len(tasks)} of {len(wanted)} ECS tasks")
    return tasks


def _read_container_instances(ecs: Any, cluster: str, arns: Sequence[str], facts: _Facts) -> None:
    """DescribeContainerInstances: EC2 instance id, registration time and instance type."""
    try:
        for batch in _batches(sorted(set(arns) - set(facts.ec2_of))):
            answer = ecs.describe_container_instances(cluster=cluster, containerInstances=batch)
            for ci in answer.get("containerInstances", []):
                instance_id = str(ci.get("ec2InstanceId", ""))
                if not instance_id:
                    continue
                facts.ec2_of[ci["containerInstanceArn"]] = instance_id
                facts.registered.setdefault(instance_id, _epoch(ci.get("registeredAt")))
                for attribute in ci.get("attributes", []):
                    if attribute.get("name") == "ecs.instance-type" and attribute.get("value"):
                        facts.types.setdefault(instance_id, str(attribute["value"]))
    except Exception as exc:  # any AWS error: report what the other sources give
        facts.missing.append(f"ECS container instances ({type(exc).__name__})")


# Auto Scaling's activity descriptions (what the console's activity history shows).
_LAUNCH_ORIGINS = (
    ("Launching a new EC2 instance from warm pool:", "warm"),
    ("Launching a new EC2 instance into warm pool:", "refill"),
    ("Launching a new EC2 instance:", "cold"),
)


def launch_origin(description: str) -> str | None:
    """`warm` (started from the warm pool), `refill` (launched into it), `cold` (launched into
    the group), or None for an activity that launches nothing."""
    return next((origin for lead, origin in _LAUNCH_ORIGINS if description.startswith(lead)), None)


def _read_activities(autoscaling: Any, group: str, since: datetime, facts: _Facts) -> None:
    """DescribeScalingActivities since the run began: launches and terminations by instance."""
    try:
        pages = autoscaling.get_paginator("describe_scaling_activities").paginate(
            AutoScalingGroupName=group
        )
        for page in pages:
            activities = page.get("Activities", [])
            for activity in activities:
                description = str(activity.get("Description", ""))
                found = _INSTANCE_ID.search(description)
                start = activity.get("StartTime")
                if not found or start is None or start < since:
                    continue
                instance_id = found.group(1)
                origin = launch_origin(description)
                if origin == "refill":
                    facts.refills.append(instance_id)
                elif origin is not None:
                    facts.launched[instance_id] = start.timestamp()
                    facts.origins[instance_id] = origin
                    end = activity.get("EndTime")
                    if end is not None and activity.get("StatusCode") == "Successful":
                        facts.in_service[instance_id] = end.timestamp()
                elif description.startswith("Terminating"):
                    facts.scale_in[instance_id] = start.timestamp()
                    end = activity.get("EndTime")
                    if end is not None and activity.get("StatusCode") == "Successful":
                        facts.terminated[instance_id] = end.timestamp()
            # Newest first: a page that reaches back before the run is the last one needed.
            oldest = activities[-1].get("StartTime") if activities else None
            if oldest is not None and oldest < since:
                break
    except Exception as exc:  # any AWS error: report what the other sources give
        facts.missing.append(f"scaling activities ({type(exc).__name__})")


def _read_instances(ec2: Any, ids: Sequence[str], facts: _Facts) -> None:
    """DescribeInstances: purchase option (InstanceLifecycle), type, launch time."""
    try:
        for batch in _batches(ids):
            for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=batch):
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        instance_id = instance["InstanceId"]
                        spot = instance.get("InstanceLifecycle") == "spot"
                        facts.purchases[instance_id] = "spot" if spot else "on-demand"
                        facts.types[instance_id] = str(instance.get("InstanceType", "?"))
                        if instance_id not in facts.launched and instance.get("LaunchTime"):
                            facts.launched[instance_id] = instance["LaunchTime"].timestamp()
    except Exception as exc:  # any AWS error: report what the other sources give
        facts.missing.append(f"EC2 instances ({type(exc).__name__})")


def collect_timeline(
    *,
    ecs: Any,
    autoscaling: Any,
    ec2: Any | None,
    cluster: str,
    group: str,
    task_arns: Sequence[str],
    since: datetime,
    known: Sequence[Mapping[str, Any]] = (),
    default_purchase: str = "on-demand",
) -> Timeline:
    """The run's instances and tasks from ECS, Auto Scaling and (if allowed) EC2.

    task_arns: the run's ECS tasks; since: when the run started (scaling activities before it
    belong to other runs); known: container instances recorded at scale-out (dicts with arn,
    instance_id, registered_at, instance_type). Each source that fails is noted in `missing`
    and the rest is used.
    """
    facts = _Facts()
    for item in known:
        instance_id = str(item["instance_id"])
        facts.registered[instance_id] = _epoch(item.get("registered_at"))
        if item.get("instance_type"):
            facts.types[instance_id] = str(item["instance_type"])
        if item.get("arn"):
            facts.ec2_of[str(item["arn"])] = instance_id
    by_arn = _read_tasks(ecs, cluster, task_arns, facts)
    _read_container_instances(ecs, cluster, [t.instance_id for t in by_arn if t.instance_id], facts)
    tasks = [
        TaskSpan(
            instance_id=facts.ec2_of.get(t.instance_id or ""),
            pull_started_at=t.pull_started_at,
            pull_stopped_at=t.pull_stopped_at,
            started_at=t.started_at,
            stopped_at=t.stopped_at,
            created_at=t.created_at,
        )
        for t in by_arn
    ]
    _read_activities(autoscaling, group, since, facts)
    on_tasks = {t.instance_id for t in tasks if t.instance_id}
    ids = sorted((set(facts.registered) | set(facts.launched) | on_tasks) - set(facts.refills))
    if ec2 is not None and ids:
        _read_instances(ec2, ids, facts)
    instances = []
    for instance_id in ids:
        start = facts.launched.get(instance_id, facts.registered.get(instance_id))
        if start is None:
            facts.missing.append(f"launch time of {instance_id}")
            continue
        instances.append(
            InstanceSpan(
                instance_id=instance_id,
                instance_type=facts.types.get(instance_id, "?"),
                purchase=facts.purchases.get(instance_id, default_purchase),
                launched_at=start,
                registered_at=facts.registered.get(instance_id),
                scale_in_at=facts.scale_in.get(instance_id),
                terminated_at=facts.terminated.get(instance_id),
                origin=facts.origins.get(instance_id),
                in_service_at=facts.in_service.get(instance_id),
            )
        )
    return Timeline(instances=instances, tasks=tasks, missing=facts.missing, refills=facts.refills)
