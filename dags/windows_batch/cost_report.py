"""The cost model (cost.py) wired into a run: the estimate in plan_tasks, the usage in scale_in.

- `plan_estimate` (plan_tasks): prices (Spot ones from AWS when PRICE_SOURCE=aws and the
  purchase option is Spot), the size `cluster_size: auto` picks, and the estimate line.
- `remember_instances` (scale_out, once the cluster is complete): the container instances'
  registration times and types, kept in XCom; ECS may forget a deregistered one by scale-in.
- `remember_scale_out_start` (scale_out, once the cluster is complete): when its first check
  asked for the capacity, for the time to the first task.
- `report_usage` (scale_in, once the group is empty): the run's timeline from ECS, Auto Scaling
  and EC2, the phase and cost line (with the warm pool's refill and EBS when there is a pool)
  and the time-to-first-task line, logged and returned for the run note (notes.py).
Reading costs never fails a run: an AWS error is logged and the line says what was missing.
AWS calls: ecs:DescribeTasks, ecs:ListContainerInstances, ecs:DescribeContainerInstances,
autoscaling:DescribeScalingActivities, ec2:DescribeInstances, ec2:DescribeSpotPriceHistory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from windows_batch import cost
    from windows_batch.settings import Settings

log = logging.getLogger(__name__)

ESTIMATE_KEY = "cost_estimate"
CLUSTER_SIZE_KEY = "cluster_size"
INSTANCES_KEY = "container_instances"
SCALE_OUT_AT_KEY = "scale_out_requested_at"
CLUSTER_SIZE_TEMPLATE = (
    "{{ ti.xcom_pull(task_ids='plan_tasks', key='" + CLUSTER_SIZE_KEY + "') "
    "or params.cluster_size }}"
)
"""scale_out's desired capacity: the size plan_tasks chose (`auto` resolved)."""
# A price look-up must not hold plan_tasks up for long when EC2's endpoint is unreachable.
_QUICK: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"mode": "standard", "max_attempts": 2},
}


def _client(settings: Settings, service: str, *, quick: bool = False) -> Any:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    from windows_batch.cluster import ADAPTIVE_RETRIES  # noqa: PLC0415

    return AwsBaseHook(
        aws_conn_id=settings.aws_conn_id,
        client_type=service,
        region_name=settings.region,
        config=Config(**(_QUICK if quick else ADAPTIVE_RETRIES)),
    ).conn


def current_prices(settings: Settings, *, instance_types: Sequence[str] = ()) -> cost.Prices:
    """The price table, with AWS's current Spot prices when PRICE_SOURCE=aws and they load."""
    from windows_batch import cost  # noqa: PLC0415 (the model: at run time only)

    table = settings.cost
    types = list(instance_types) or list(table.instance_types)
    if table.price_source != "aws" or settings.backend == "local":
        return cost.prices_from(table)
    try:
        spot = cost.spot_prices(
            _client(settings, "ec2", quick=True), types, now=datetime.now(tz=UTC)
        )
    except Exception as exc:  # not allowed, not reachable: the table's fraction stands in
        log.warning("Spot prices not available (%s); using the price table", exc)
        spot = {}
    return cost.prices_from(table, spot)


def plan_estimate(
    settings: Settings, *, task_s: Sequence[float], requested: int | str, slots: int
) -> cost.Sizing:
    """The cluster size for the run and its estimate (`auto` resolved); slots: the study's
    tasks per instance."""
    from windows_batch import cost  # noqa: PLC0415 (the model: at run time only)

    table = settings.cost
    wants_spot = table.purchase_option == "spot"
    prices = current_prices(settings) if wants_spot else cost.prices_from(table)
    return cost.size_cluster(
        task_s,
        requested=requested,
        max_size=settings.max_cluster_size,
        slots_per_instance=slots,
        settings=table,
        prices=prices,
    )


def remember_instances(settings: Settings, context: Mapping[str, Any], ecs: Any) -> None:
    """Keep the cluster's container instances (id, registration, type) in scale_out's XCom."""
    try:
        pages = ecs.get_paginator("list_container_instances").paginate(
            cluster=settings.cluster_name
        )
        arns = [arn for page in pages for arn in page.get("containerInstanceArns", [])]
        found: list[dict[str, Any]] = []
        for start in range(0, len(arns), 100):
            answer = ecs.describe_container_instances(
                cluster=settings.cluster_name, containerInstances=arns[start : start + 100]
            )
            for ci in answer.get("containerInstances", []):
                types = [
                    a.get("value")
                    for a in ci.get("attributes", [])
                    if a.get("name") == "ecs.instance-type"
                ]
                registered = ci.get("registeredAt")
                found.append(
                    {
                        "arn": ci.get("containerInstanceArn"),
                        "instance_id": ci.get("ec2InstanceId"),
                        "registered_at": registered.timestamp()
                        if isinstance(registered, datetime)
                        else registered,
                        "instance_type": types[0] if types else None,
                    }
                )
        context["ti"].xcom_push(key=INSTANCES_KEY, value=found)
    except Exception as exc:  # the cost report is a convenience, never fatal
        log.warning("Could not record the container instances for the cost report: %s", exc)


def remember_scale_out_start(context: Mapping[str, Any]) -> None:
    """Keep, in scale_out's XCom, when its first check set the capacity (epoch seconds).

    A sensor in reschedule mode loses its XCom at each check; the first check's start is
    Airflow's first reschedule date, and the check itself when there was none.
    """
    try:
        ti = context["ti"]
        first = getattr(ti, "get_first_reschedule_date", None)
        started = first(context) if callable(first) else None
        moment = started.timestamp() if isinstance(started, datetime) else time.time()
        ti.xcom_push(key=SCALE_OUT_AT_KEY, value=moment)
    except Exception as exc:  # the time to the first task is a convenience, never fatal
        log.warning("Could not record when scale_out began: %s", exc)


def _task_arns(ti: Any, task_ids: Sequence[str]) -> list[str]:
    arns = ti.xcom_pull(task_ids=list(task_ids), key="ecs_task_arn") or []
    if isinstance(arns, str):
        arns = [arns]
    return [a for a in arns if isinstance(a, str)]


def report_usage(
    settings: Settings, context: Mapping[str, Any], *, task_ids: Sequence[str]
) -> str | None:
    """Log the run's phase and cost line and the time to its first task, and return them for
    the run note; task_ids: the run's ECS tasks' ids."""
    from windows_batch import cost  # noqa: PLC0415 (the model: at run time only)

    try:
        ti = context["ti"]
        dag_run = context.get("dag_run")
        since = getattr(dag_run, "start_date", None) or datetime.fromtimestamp(0, tz=UTC)
        known = ti.xcom_pull(task_ids="scale_out", key=INSTANCES_KEY) or []
        try:
            ec2 = _client(settings, "ec2")
        except Exception:  # no EC2 client: the ECS and Auto Scaling sources still answer
            ec2 = None
        timeline = cost.collect_timeline(
            ecs=_client(settings, "ecs"),
            autoscaling=_client(settings, "autoscaling"),
            ec2=ec2,
            cluster=settings.cluster_name,
            group=settings.asg_name,
            task_arns=_task_arns(ti, task_ids),
            since=since,
            known=known,
            default_purchase=settings.cost.purchase_option,
        )
        prices = cost.prices_from(settings.cost)
        if any(i.purchase == "spot" for i in timeline.instances):
            prices = current_prices(
                settings, instance_types=sorted({i.instance_type for i in timeline.instances})
            )
        line = cost.usage(timeline.instances, timeline.tasks, now=time.time(), prices=prices).line()
        pool = _pool_line(settings, timeline, prices)
        if pool:
            line += f"; {pool}"
        if timeline.missing:
            line += f" (not read: {'; '.join(timeline.missing)})"
        log.info("%s", line)
        first = _first_task_line(ti, dag_run, timeline)
        if first:
            log.info("%s", first)
            return f"{line}\n{first}"
        return line
    except Exception as exc:  # the cost report is a convenience, never fatal
        log.warning("Could not report the cluster's time and cost: %s", exc)
        return None


def _pool_line(settings: Settings, timeline: cost.Timeline, prices: cost.Prices) -> str:
    """The warm pool's part of the run (instances started from it, their estimated refill,
    the stopped pool's EBS per hour), or "" without a pool."""
    from windows_batch import cost  # noqa: PLC0415 (the model: at run time only)

    origins = [i.origin for i in timeline.instances]
    if settings.cost.warm_pool_size <= 0 and "warm" not in origins:
        return ""
    use = cost.pool_use(
        settings.cost,
        prices,
        from_pool=origins.count("warm"),
        cold=len(origins) - origins.count("warm"),
    )
    refills = len(timeline.refills)
    launched = f"; {refills} launched into the pool since the run began" if refills else ""
    return use.line(measured=True) + launched


def _first_task_line(ti: Any, dag_run: Any, timeline: cost.Timeline) -> str:
    """`first task: ... after the trigger (queued ..., boot ..., ...)`, or "" if none started."""
    from windows_batch import cost  # noqa: PLC0415 (the model: at run time only)

    triggered = getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None)
    if not isinstance(triggered, datetime):
        return ""
    scale_out_at = ti.xcom_pull(task_ids="scale_out", key=SCALE_OUT_AT_KEY)
    found = cost.first_task(
        timeline,
        triggered_at=triggered.timestamp(),
        scale_out_at=float(scale_out_at) if scale_out_at is not None else None,
    )
    return "" if found is None else found.line()
