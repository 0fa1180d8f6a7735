"""Scaling the ECS cluster's Auto Scaling group out and back in, and waiting for it.

Both waits are sensors in `reschedule` mode: between two checks the task gives its worker slot
back (state "up_for_reschedule"), so waiting ten minutes for Windows instances to boot costs
seconds of worker time. Each check (re)sets the desired capacity, which is idempotent and also
undoes a change someone made by hand meanwhile. A timeout fails the task with what was seen.

With a warm pool (WARM_POOL_SIZE above 0) scale_out also reads the pool and the group's launch
activities: each check says how many instances came from the pool (started from stopped) and how
many launched cold (a pool smaller than the cluster is allowed), and what the pool holds. The wait
is the same: an instance counts once the group has it InService (a lifecycle hook holds it in
Pending:Wait until its user data completes) and its agent has registered (the agent registers
only once the instance is bound for InService, ECS_WARM_POOLS_CHECK).

While scale_out waits, each check also tells the ECS stack's idle alarm that a scale-out is
under way (`signal_scaling_out`): the first instances of a slow scale-out are idle by design,
and the alarm must not set the group back to 0 under the sensor. The signal is a heartbeat, not
a switch: if Airflow dies mid-way it stops, and the alarm is armed again.

No ECS task outlives its run: every task a run starts carries the run's task group
(`run_task_group`), and each check of scale_in first stops any task of that group still running
(one whose Airflow task was marked failed before its trigger could stop it, or whose triggerer
was gone).

Several studies share one cluster, and runs of different studies must not scale each other in.
The rule: scale_out never lowers the group below what another study's active run set
(desired = max(current, this run's) while one is active); scale_in sets the group to 0 only
when no other study's run is active (queued or running), and otherwise leaves the cluster to
it: the last run out scales in. A study's own runs never overlap (max_active_runs=1).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from windows_batch import cost_report
from windows_batch.capacity import Size

if TYPE_CHECKING:
    from airflow.sdk import Context

    from windows_batch.settings import Settings

ADAPTIVE_RETRIES: dict[str, Any] = {"retries": {"mode": "adaptive", "max_attempts": 10}}
"""botocore retry config: client-side rate limiting plus backoff against API throttling."""
_DESCRIBE_BATCH = 100
LEFTOVER_REASON = "Stopped by Airflow: its run is scaling in (scale_in stops every task of the run)"
WARMED_STATES = ("Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated")
"""Warm pool instances ready to be started into the group."""
_PLACEHOLDER_TIMEOUT_S = 3600


def aws_client(settings: Settings, service: str) -> Any:
    """A boto3 client for `service` through the Airflow AWS connection, adaptive retries."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # noqa: PLC0415

    hook = AwsBaseHook(
        aws_conn_id=settings.aws_conn_id,
        client_type=service,
        region_name=settings.region,
        config=_botocore_config(),
    )
    return hook.conn


def _botocore_config() -> Any:
    from botocore.config import Config  # noqa: PLC0415

    return Config(**ADAPTIVE_RETRIES)


SCALING_OUT_NAMESPACE = "WindowsBatch"
SCALING_OUT_METRIC = "ScalingOut"
"""scale_out's heartbeat (dimension AutoScalingGroupName), sent at each check: the idle alarm
(cloudformation/ecs.yaml, IdleClusterAlarm) counts no minute that has one as idle."""


def signal_scaling_out(cloudwatch: Any, group: str) -> None:
    """Tell the idle alarm that a scale-out of `group` is under way, for this minute."""
    cloudwatch.put_metric_data(
        Namespace=SCALING_OUT_NAMESPACE,
        MetricData=[
            {
                "MetricName": SCALING_OUT_METRIC,
                "Dimensions": [{"Name": "AutoScalingGroupName", "Value": group}],
                "Value": 1.0,
                "Unit": "Count",
            }
        ],
    )


def set_desired_capacity(autoscaling: Any, group: str, desired: int) -> None:
    """Set the group's desired capacity (no cooldown wait); explain a Min/MaxSize refusal."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        autoscaling.set_desired_capacity(
            AutoScalingGroupName=group, DesiredCapacity=desired, HonorCooldown=False
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationError":
            what = "cluster_size" if desired > 0 else "the group's MinSize (must be 0)"
            raise AirflowFailException(
                f"{what}: Auto Scaling group {group!r} refused a desired capacity of "
                f"{desired}: {exc}"
            ) from exc
        raise


def group_state(autoscaling: Any, group: str) -> dict[str, Any]:
    """The group's desired capacity, its instances' lifecycle states, the IDs of those InService
    and Healthy, and those on their way out (`Unhealthy` or `Terminating*`: a failed health
    check, a reclaimed Spot instance, one that capacity rebalancing terminates once its
    replacement is in service), with their state."""
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    found = groups.get("AutoScalingGroups", [])
    if not found:
        raise AirflowFailException(
            f"Auto Scaling group {group!r} does not exist "
            "(deployment setting AIRFLOW__WINDOWS_BATCH__ASG_NAME)"
        )
    info = found[0]
    instances = info.get("Instances", [])
    return {
        "desired": info.get("DesiredCapacity"),
        "ids": [str(i.get("InstanceId")) for i in instances],
        "instances": [i.get("LifecycleState", "?") for i in instances],
        "in_service": {
            i.get("InstanceId")
            for i in instances
            if i.get("LifecycleState") == "InService" and i.get("HealthStatus") != "Unhealthy"
        },
        "replacing": {
            i.get("InstanceId"): f"{i.get('LifecycleState', '?')}, {i.get('HealthStatus', '?')}"
            for i in instances
            if i.get("HealthStatus") == "Unhealthy"
            or str(i.get("LifecycleState", "")).startswith("Terminating")
        },
    }


def warm_pool(autoscaling: Any, group: str) -> list[str] | None:
    """DescribeWarmPool: the lifecycle states of the pool's instances; None without a pool."""
    pages = autoscaling.get_paginator("describe_warm_pool").paginate(AutoScalingGroupName=group)
    configured = False
    states: list[str] = []
    for page in pages:
        configured = configured or bool(page.get("WarmPoolConfiguration"))
        states += [str(i.get("LifecycleState", "?")) for i in page.get("Instances", [])]
    return states if configured else None


def launch_origins(autoscaling: Any, group: str, *, since: datetime) -> dict[str, str]:
    """Instance ID -> `warm` (started from the warm pool) or `cold` (launched), from the group's
    launch activities since `since` (Auto Scaling lists them newest first)."""
    from windows_batch.cost import launch_origin  # noqa: PLC0415 (the cost model: at run time)

    origins: dict[str, str] = {}
    pages = autoscaling.get_paginator("describe_scaling_activities").paginate(
        AutoScalingGroupName=group
    )
    for page in pages:
        activities = page.get("Activities", [])
        for activity in activities:
            start = activity.get("StartTime")
            description = str(activity.get("Description", ""))
            origin = launch_origin(description)
            if start is None or start < since or origin not in ("warm", "cold"):
                continue
            instance_id = description.rsplit(":", 1)[-1].strip()
            origins.setdefault(instance_id, str(origin))
        oldest = activities[-1].get("StartTime") if activities else None
        if oldest is not None and oldest < since:
            break
    return origins


def warm_pool_note(autoscaling: Any, group: str, ids: list[str], *, since: datetime) -> str:
    """`; warm pool: 2 of 3 instances started from it, 1 launched cold; pool: ...` (or why
    it could not be read: the wait never depends on it)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        pool = warm_pool(autoscaling, group)
        origins = launch_origins(autoscaling, group, since=since) if pool is not None else {}
    except (BotoCoreError, ClientError) as exc:
        return f"; warm pool not read ({exc})"
    if pool is None:
        return f"; no warm pool: {len(ids)} launched cold"
    warm = sum(1 for i in ids if origins.get(i) == "warm")
    ready = sum(1 for state in pool if state in WARMED_STATES)
    left = f"{_lifecycle_summary(pool)} ({ready} ready)" if pool else "empty"
    return (
        f"; warm pool: {warm} of {len(ids)} instances started from it, {len(ids) - warm} "
        f"launched cold; pool: {left}"
    )


def active_container_instances(ecs: Any, cluster: str) -> list[dict[str, Any]]:
    """The cluster's ACTIVE container instances, as DescribeContainerInstances gives them.

    DRAINING (a Spot interruption notice) and INACTIVE (deregistered, e.g. its instance was
    terminated) container instances are not listed.
    """
    pages = ecs.get_paginator("list_container_instances").paginate(cluster=cluster, status="ACTIVE")
    arns = [arn for page in pages for arn in page.get("containerInstanceArns", [])]
    found: list[dict[str, Any]] = []
    for start in range(0, len(arns), _DESCRIBE_BATCH):
        described = ecs.describe_container_instances(
            cluster=cluster, containerInstances=arns[start : start + _DESCRIBE_BATCH]
        )
        found += described.get("containerInstances", [])
    return found


def container_hosts(ecs: Any, cluster: str) -> dict[str, bool]:
    """The cluster's ACTIVE container instances: EC2 instance ID -> agent connected."""
    return {
        str(ci.get("ec2InstanceId") or ci.get("containerInstanceArn")): bool(
            ci.get("agentConnected", True)
        )
        for ci in active_container_instances(ecs, cluster)
    }


def registered_sizes(ecs: Any, cluster: str) -> list[Size]:
    """The CPU and memory each ACTIVE container instance registered (registeredResources)."""
    sizes = []
    for ci in active_container_instances(ecs, cluster):
        registered = ci.get("registeredResources", [])
        resources = {r.get("name"): r.get("integerValue") for r in registered}
        if resources.get("CPU") is not None and resources.get("MEMORY") is not None:
            sizes.append(Size(int(resources["CPU"]), int(resources["MEMORY"])))
    return sizes


def run_task_group(dag_id: str, run_id: str) -> str:
    """The ECS task group of one DAG run (RunTask's `group`: letters, digits, '-', '_', ':')."""
    digest = hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:24]
    return f"windows-batch:{digest}"


def stop_group_tasks(ecs: Any, cluster: str, group: str, reason: str) -> list[str]:
    """StopTask every task of `group` whose desired status is still RUNNING; their ARNs."""
    pages = ecs.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus="RUNNING")
    arns = [arn for page in pages for arn in page.get("taskArns", [])]
    stopped = []
    for start in range(0, len(arns), _DESCRIBE_BATCH):
        described = ecs.describe_tasks(cluster=cluster, tasks=arns[start : start + _DESCRIBE_BATCH])
        for task in described.get("tasks", []):
            if task.get("group") == group and task.get("desiredStatus") == "RUNNING":
                ecs.stop_task(cluster=cluster, task=task["taskArn"], reason=reason)
                stopped.append(str(task["taskArn"]))
    return stopped


class _ClusterSensor(BaseSensorOperator):
    """Base for the two waits: renders `desired` and `timeout_s` from the run's params."""

    template_fields = ("desired", "timeout_s")
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        desired: str | int,
        timeout_s: str | int,
        settings: Settings,
        other_dag_ids: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            mode="reschedule",
            # Not sooner than DEFER_SETTLE_S: a rescheduled try, like a deferred one, must not
            # be queued again before the scheduler has read its worker's report.
            poke_interval=max(settings.scale_poke_interval_s, settings.defer_settle_s),
            timeout=_PLACEHOLDER_TIMEOUT_S,
            **kwargs,
        )
        self.desired = desired
        self.timeout_s = timeout_s
        self.settings = settings
        self.other_dag_ids = other_dag_ids
        self.seen = "nothing checked yet"

    def other_runs(self, context: Context) -> list[str]:
        """The other studies' DAGs with a queued or running run (they share the cluster)."""
        ti: Any = context["ti"]
        busy = []
        for dag_id in self.other_dag_ids:
            try:
                count = ti.get_dr_count(dag_id=dag_id, states=["queued", "running"])
            except Exception as exc:  # an unknown (e.g. paused, never parsed) DAG counts as idle
                self.log.debug("Could not count the runs of %s: %s", dag_id, exc)
                continue
            if count:
                busy.append(dag_id)
        return busy

    def execute(self, context: Context) -> Any:
        self.timeout = float(self.timeout_s)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"{self.task_id}: gave up after {float(self.timeout_s):.0f} s "
                f"(timeout field {self._timeout_field}); last seen: {self.seen}"
            ) from exc

    _timeout_field = ""


class ScaleOutSensor(_ClusterSensor):
    """Set the group's desired capacity to `desired`; done once that many container instances
    are ACTIVE with the agent connected on instances the group has InService and Healthy.
    Each check keeps the idle alarm quiet for the minute (signal_scaling_out).

    An instance the group is replacing (terminated, unhealthy, reclaimed, rebalanced) is not
    counted even while its agent is still connected: the wait goes on, within the timeout,
    until its replacement registers. More instances than desired (capacity rebalancing launches
    the replacement first) count as they are.
    """

    _timeout_field = "scale_out_timeout_s"

    def poke(self, context: Context) -> bool:
        desired = int(self.desired)
        autoscaling = aws_client(self.settings, "autoscaling")
        ecs = aws_client(self.settings, "ecs")
        try:
            signal_scaling_out(aws_client(self.settings, "cloudwatch"), self.settings.asg_name)
        except Exception as exc:  # the wait goes on; only the alarm's patience is at stake
            self.log.warning(
                "Could not tell the idle alarm that the group is scaling out (%s): instances "
                "idle for IdleScaleInMinutes before the scale-out completes may be scaled in",
                exc,
            )
        sharing = self.other_runs(context)
        target = desired
        if sharing:
            current = int(group_state(autoscaling, self.settings.asg_name)["desired"] or 0)
            target = max(current, desired)
            self.log.info(
                "Sharing the cluster with the active run(s) of %s: desired capacity %s "
                "(this run needs %s)",
                ", ".join(sharing),
                target,
                desired,
            )
        set_desired_capacity(autoscaling, self.settings.asg_name, target)
        group = group_state(autoscaling, self.settings.asg_name)
        hosts = container_hosts(ecs, self.settings.cluster_name)
        ready = [h for h, connected in hosts.items() if connected and h in group["in_service"]]
        self.seen = (
            f"{len(ready)} of {desired} container instances ACTIVE with the agent connected "
            f"on an InService instance in cluster {self.settings.cluster_name!r} "
            f"({len(hosts)} ACTIVE); group {self.settings.asg_name!r}: desired "
            f"{group['desired']}, instances {_lifecycle_summary(group['instances'])}"
            f"{_replacement_note(group, hosts, desired)}"
        )
        if self.settings.cost.warm_pool_size > 0:
            self.seen += warm_pool_note(
                autoscaling, self.settings.asg_name, group["ids"], since=_run_start(context)
            )
        self.log.info("%s", self.seen)
        if len(ready) >= desired:
            cost_report.remember_instances(self.settings, context, ecs)
            cost_report.remember_scale_out_start(context)
            return True
        return False


class ScaleInSensor(_ClusterSensor):
    """Set the group's desired capacity to 0; done once the group has no instances left (or
    at once, leaving the cluster as it is, while another study's run uses it).

    on_done(context, cost_line): called once, when scale-in is done (the run note).
    """

    _timeout_field = "scale_in_timeout_s"

    def __init__(
        self, *, task_ids: tuple[str, ...] = (), on_done: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.task_ids = task_ids
        self.on_done = on_done

    def poke(self, context: Context) -> bool:
        dag_run: Any = context.get("dag_run")
        if dag_run is not None:
            run_group = run_task_group(str(dag_run.dag_id), str(dag_run.run_id))
            ecs = aws_client(self.settings, "ecs")
            cluster = self.settings.cluster_name
            for arn in stop_group_tasks(ecs, cluster, run_group, LEFTOVER_REASON):
                self.log.warning("Stopped ECS task %s of this run, still running", arn)
        sharing = self.other_runs(context)
        if sharing:
            self.log.warning(
                "Leaving the cluster as it is: the active run(s) of %s use it, and the last "
                "run out scales it in",
                ", ".join(sharing),
            )
            self._done(context, None)
            return True
        autoscaling = aws_client(self.settings, "autoscaling")
        set_desired_capacity(autoscaling, self.settings.asg_name, 0)
        group = group_state(autoscaling, self.settings.asg_name)
        self.seen = (
            f"group {self.settings.asg_name!r}: desired {group['desired']}, instances "
            f"{_lifecycle_summary(group['instances'])}"
        )
        self.log.info("%s", self.seen)
        if group["instances"]:
            return False
        self._done(
            context, cost_report.report_usage(self.settings, context, task_ids=self.task_ids)
        )
        return True

    def _done(self, context: Context, cost_line: str | None) -> None:
        if self.on_done is not None:
            try:
                self.on_done(context, cost_line)
            except Exception as exc:  # the note is a convenience, never fatal
                self.log.warning("Could not update the run note: %s", exc)


def _replacement_note(group: dict[str, Any], hosts: dict[str, bool], desired: int) -> str:
    """What the wait does not count, and why it goes on: instances being replaced and such."""
    notes = []
    if group["replacing"]:
        which = ", ".join(f"{i} ({state})" for i, state in sorted(group["replacing"].items()))
        notes.append(
            f"an instance is being replaced: {which}; the group launches a replacement and "
            "the wait goes on until it registers"
        )
    if len(group["instances"]) > desired:
        notes.append(
            f"{len(group['instances'])} instances for {desired} desired while one is replaced "
            "(capacity rebalancing launches the replacement first)"
        )
    disconnected = sorted(h for h, connected in hosts.items() if not connected)
    if disconnected:
        notes.append(f"not counted, agent disconnected: {', '.join(disconnected)}")
    leaving = sorted(h for h, c in hosts.items() if c and h not in group["in_service"])
    if leaving:
        notes.append(f"not counted, not InService and Healthy in the group: {', '.join(leaving)}")
    return "".join(f"; {note}" for note in notes)


def _run_start(context: Context) -> datetime:
    """When the run began (activities before it belong to other runs)."""
    started = getattr(context.get("dag_run"), "start_date", None)
    return started if isinstance(started, datetime) else datetime.fromtimestamp(0, tz=UTC)


def _lifecycle_summary(states: list[str]) -> str:
    if not states:
        return "none"
    return ", ".join(f"{n} {state}" for state, n in sorted(Counter(states).items()))
