"""The ECS backend: bersim in Windows containers on the cluster, one ECS task per Airflow task.

`simulate` and `aggregate` are `EcsRunTaskOperator`s (deferrable: while a container runs, the
Airflow task waits in the triggerer, not on a worker; `reattach=True`: a retry re-attaches to
its still-running container instead of starting a second one). The container command is the
planned bersim argv (`command`), put into the task's container overrides.

One deadline per try (deadline.py): TASK_TIMEOUT_S from the try's start, carried through every
deferral. The capacity waits end at it, and so does the wait for the container, which is then
stopped (StopTask, reason naming the deadline) before the try fails; a retry starts afresh.
A person marking a deferred task failed or success stops its container (the trigger's on_kill);
a running one is stopped by the provider's `on_kill`.

Capacity. Airflow fixes `max_active_tis_per_dagrun` at parse time, so it cannot follow the
run's `cluster_size`: it caps simulations at MAX_PARALLEL_TASKS (by default the largest cluster
allowed x slots per instance). When RunTask still finds no room, ECS says why in `failures`
(`RESOURCE:CPU`, `RESOURCE:MEMORY`, ... and `AGENT` for an instance whose agent is not
connected) or refuses with "No Container Instances were found in your cluster" while instances
are still registering: the task then waits in the triggerer for CAPACITY_RETRY_S and calls
RunTask again, without using up an Airflow retry, until the deadline. Any other placement
failure (`ATTRIBUTE`, `MISSING`, ...) fails at once with ECS's reason. So does a `RESOURCE:*`
failure when the task is larger than every registered container instance (capacity.py): no
amount of waiting makes room for it.

No simulation runs twice: before it starts a container, a simulate try looks for this run's
result of its index (the study's `result_check`); a valid one is reported instead.

A task whose host went away (ECS stops it with stoppedReason "Host EC2 (instance i-...)
terminated." or the stop code SpotInterruption) runs again on another instance within the same
try and deadline, like a capacity wait: an interruption costs time, not a retry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from airflow.providers.amazon.aws.exceptions import EcsOperatorError
from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.amazon.aws.triggers.ecs import TaskDoneTrigger
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.identifiers import generate_uuid
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, TriggerRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from botocore.exceptions import ClientError, WaiterError
from windows_batch_triggers.deadline import (
    DEADLINE_STATUS,
    DeadlineTaskDoneTrigger,
    deadline_reason,
    deadline_text,
    try_deadline_ts,
)

from windows_batch.capacity import Size, placement_refusal
from windows_batch.cluster import (
    ADAPTIVE_RETRIES,
    ScaleInSensor,
    ScaleOutSensor,
    registered_sizes,
    run_task_group,
)
from windows_batch.cost_report import CLUSTER_SIZE_TEMPLATE
from windows_batch.plan import EXIT_MISSING_TASKS, FINAL_EXITS, exit_message
from windows_batch.results import PublishResultsMixin, split_s3_uri

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from windows_batch.settings import Settings

TRIGGER_FAIL = "__fail__"
"""next_method Airflow sets when a trigger failed or timed out (sdk/bases/operator.py)."""
WAIT_REASON_PREFIXES = ("RESOURCE:", "AGENT")
"""RunTask failure reasons that mean "no room now": wait and ask again."""
NO_INSTANCES = "No Container Instances were found in your cluster"
"""RunTask's InvalidParameterException while no container instance is registered (yet)."""
TRIGGER_GRACE_S = 120
"""A deferral's own timeout lies this far past the deadline: the trigger fires first, and
Airflow's trigger timeout only ends a try whose triggerer is gone."""
HOST_GONE = re.compile(r"Host EC2 \(instance .+?\) (stopped|terminated)\.")
"""ECS's stoppedReason when the container instance went away (stopped-task-errors docs)."""
HOST_GONE_STOP_CODES = ("SpotInterruption", "TerminationNotice")
# Slack added to the ECS waiter so that the try's deadline, not the waiter, ends a long task.
_WAITER_SLACK_S = 600


class ResultCheck(Protocol):
    """The study's answer to "has this command's result already been written?"."""

    def result_uri(self, command: Sequence[str]) -> str | None:
        """The s3:// URI the command writes its result to (None: it has no single result)."""

    def describe_result(self, command: Sequence[str], data: bytes) -> str | None:
        """A one-line summary if `data` is a valid result of `command`, else None."""


def _trigger_not_importable(next_kwargs: dict[str, Any] | None) -> bool:
    """True if the trigger failed because the triggerer could not import our trigger package."""
    traceback = "\n".join((next_kwargs or {}).get("traceback") or [])
    return "No module named 'windows_batch_triggers'" in traceback


def placement_failure_kind(failures: list[dict[str, Any]]) -> str:
    """ "wait" if every RunTask failure means the cluster has no room now, else "fail"."""
    reasons = [str(f.get("reason", "")) for f in failures]
    if reasons and all(r.startswith(WAIT_REASON_PREFIXES) for r in reasons):
        return "wait"
    return "fail"


def is_capacity_failure(failures: list[dict[str, Any]]) -> bool:
    """True if RunTask placed nothing only because the cluster had no room now."""
    return placement_failure_kind(failures) == "wait"


def failure_text(failures: list[dict[str, Any]]) -> str:
    """ECS's failures as one line: reason (detail) for arn, ..."""
    parts = []
    for failure in failures:
        text = str(failure.get("reason", "?"))
        if failure.get("detail"):
            text += f" ({failure['detail']})"
        if failure.get("arn"):
            text += f" for {failure['arn']}"
        parts.append(text)
    return "; ".join(parts) or "no reason given"


def container_overrides(container_name: str, command: list[str]) -> dict[str, Any]:
    return {"containerOverrides": [{"name": container_name, "command": [str(a) for a in command]}]}


class BersimEcsOperator(EcsRunTaskOperator):
    """Run `bersim <command>` as one ECS task, within one deadline per try.

    command: the bersim argv (container command override);
    capacity_retry_s: seconds to wait before calling RunTask again when the cluster has no room;
    task_timeout_s: the try's deadline, in seconds from its start, across every deferral;
    result_check: the study's lookup of an already written result (None: always run);
    task_cpu, task_memory_mib: what the task definition's container reserves (None: not
    compared with the instances, every RESOURCE:* failure is a wait).
    Exit 2 (bad input) and 3 (missing task results) fail without retries.
    """

    template_fields = (*EcsRunTaskOperator.template_fields, "command")
    ui_color = "#fbe3c8"

    def __init__(
        self,
        *,
        command: list[str],
        capacity_retry_s: int = 30,
        defer_settle_s: int = 10,
        task_timeout_s: int = 7200,
        result_check: ResultCheck | None = None,
        task_cpu: int | None = None,
        task_memory_mib: int | None = None,
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(overrides=overrides or {}, **kwargs)
        self.command = command
        self.capacity_retry_s = capacity_retry_s
        self.defer_settle_s = defer_settle_s
        self.task_timeout_s = task_timeout_s
        self.result_check = result_check
        self.task_cpu = task_cpu
        self.task_memory_mib = task_memory_mib
        self.last_exit_code: int | None = None
        self.deadline_ts: float | None = None

    def _set_deadline(self, context: Context, carried_ts: float | None) -> float:
        self.deadline_ts = try_deadline_ts(
            context, timeout_s=self.task_timeout_s, carried_ts=carried_ts
        )
        return self.deadline_ts

    @property
    def _deadline(self) -> float:
        assert self.deadline_ts is not None, "the deadline is set when a try (re)starts"
        return self.deadline_ts

    @property
    def _stop_reason(self) -> str:
        return deadline_reason(timeout_s=self.task_timeout_s, deadline_ts=self._deadline)

    def defer(
        self,
        *,
        trigger: BaseTrigger,
        method_name: str,
        kwargs: dict[str, Any] | None = None,
        timeout: timedelta | int | float | None = None,
    ) -> NoReturn:
        """Every deferral carries the deadline and ends by it (the container wait included)."""
        if isinstance(trigger, TaskDoneTrigger) and not isinstance(
            trigger, DeadlineTaskDoneTrigger
        ):
            _, trigger_kwargs = trigger.serialize()
            trigger = DeadlineTaskDoneTrigger(
                **trigger_kwargs,
                deadline_ts=self._deadline,
                stop_reason=self._stop_reason,
                settle_s=self.defer_settle_s,
            )
        remaining_s = max(self._deadline - time.time(), 0.0)
        super().defer(
            trigger=trigger,
            method_name=method_name,
            kwargs={**(kwargs or {}), "deadline_ts": self._deadline},
            timeout=timedelta(seconds=remaining_s + TRIGGER_GRACE_S),
        )

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context
    ) -> Any:
        if next_method == TRIGGER_FAIL:
            self._set_deadline(context, None)
            if _trigger_not_importable(next_kwargs) and self._own_running_tasks(context):
                return self._wait_on_this_worker(context)
            if time.time() >= self._deadline:
                # Airflow timed the trigger out (its triggerer gone): no container of this try
                # may outlive its deadline. Before it, a failed trigger leaves the container to
                # the retry, which reattaches to it (and bounds it by its own deadline).
                self._stop_own_tasks(context, self._stop_reason)
        return super().resume_execution(next_method, next_kwargs, context)

    def _wait_on_this_worker(self, context: Context) -> Any:
        """Our trigger could not be imported in the triggerer: wait here, until the deadline.

        The trigger lives in plugins/ (on every component's sys.path); this covers a deployment
        whose triggerer does not have it, e.g. plugins.zip not installed.
        Waiting on the worker (the provider's boto3 waiter) needs no triggerer and keeps the
        deadline, and a person marking the task failed reaches the provider's `on_kill`.
        """
        running = self._own_running_tasks(context)
        if not running or time.time() >= self._deadline:
            return None
        self.log.error(
            "The triggerer cannot import windows_batch_triggers.deadline (deploy plugins/ as "
            "plugins.zip, or put it on the triggerer's PYTHONPATH); waiting for the ECS task "
            "on this worker until the deadline"
        )
        self.arn = running[0]
        attempts = max(int((self._deadline - time.time()) // self.waiter_delay), 1)
        client: Any = self.client
        try:
            client.get_waiter("tasks_stopped").wait(
                cluster=self.cluster,
                tasks=[self.arn],
                WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": attempts},
            )
        except WaiterError:
            self._stop_own_tasks(context, self._stop_reason)
            self._fail_at_deadline(f"ECS task {self.arn} stopped")
        event = {"status": "success", "task_arn": self.arn, "cluster": self.cluster}
        return self.execute_complete(context, event=event, deadline_ts=self._deadline)

    def _own_running_tasks(self, context: Context) -> list[str]:
        ti: Any = context["ti"]
        started_by = generate_uuid(*map(str, [ti.dag_id, ti.task_id, ti.run_id, ti.map_index]))
        client: Any = self.client
        return list(
            client.list_tasks(cluster=self.cluster, desiredStatus="RUNNING", startedBy=started_by)[
                "taskArns"
            ]
        )

    def _stop_own_tasks(self, context: Context, reason: str) -> None:
        """Stop this task instance's running ECS tasks (found by startedBy, as reattach does)."""
        try:
            client: Any = self.client
            for arn in self._own_running_tasks(context):
                client.stop_task(cluster=self.cluster, task=arn, reason=reason)
                self.log.warning("Stopped ECS task %s: %s", arn, reason)
        except Exception as exc:  # the try fails anyway; say why the task may still run
            self.log.error("Could not stop this try's ECS tasks: %s", exc)

    def _fail_at_deadline(self, what: str) -> NoReturn:
        raise AirflowException(
            f"{what}: this try reached its deadline (TASK_TIMEOUT_S={self.task_timeout_s} s "
            f"after it started, {deadline_text(self._deadline)})"
        )

    def execute(
        self, context: Context, deadline_ts: float | None = None, waiting_for: str | None = None
    ) -> Any:
        self._set_deadline(context, deadline_ts)
        if time.time() >= self._deadline:
            if waiting_for:
                self._fail_at_deadline(f"The cluster had no room for this task ({waiting_for})")
            self._fail_at_deadline("No ECS task started")
        self.overrides = container_overrides(str(self.container_name), list(self.command))
        ti: Any = context["ti"]
        # scale_in stops whatever of this run's group is still running.
        self.group = run_task_group(str(ti.dag_id), str(ti.run_id))
        existing = self._existing_result()
        if existing is not None:
            self.log.info("Not simulating again: %s", existing)
            return existing
        try:
            return super().execute(context)
        except EcsOperatorError as exc:
            if placement_failure_kind(exc.failures) == "fail":
                raise AirflowFailException(
                    f"ECS cannot place this task: {failure_text(exc.failures)}"
                ) from exc
            why = ", ".join(sorted({str(f.get("reason")) for f in exc.failures}))
            # Once per try (its first wait): the instances are the ones scale_out waited for.
            if waiting_for is None and "RESOURCE:" in why:
                self._fail_if_it_never_fits(why)
            self._wait_for_room(context, why)
        except ClientError as exc:
            if NO_INSTANCES not in str(exc):
                raise
            self._wait_for_room(context, NO_INSTANCES)

    def _existing_result(self) -> str | None:
        """The study's summary of this command's result if it is already there and valid."""
        if self.result_check is None:
            return None
        uri = self.result_check.result_uri(list(self.command))
        if not uri:
            return None
        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: PLC0415

            s3: Any = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).conn
            bucket, key = split_s3_uri(uri)
            # Listing, not HEAD: without s3:ListBucket on the whole bucket S3 answers a HEAD of
            # a missing key with 403, while a listing under the key's prefix is allowed.
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
            if not any(item.get("Key") == key for item in listed.get("Contents", [])):
                return None
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # simulating again is only slower: same seed, same result
            self.log.warning("Could not look for an existing result at %s: %s", uri, exc)
            return None
        summary = self.result_check.describe_result(list(self.command), data)
        if summary is None:
            self.log.warning("%s exists but is not a valid result of this task: simulating", uri)
            return None
        return f"existing result {uri}: {summary}"

    def _fail_if_it_never_fits(self, why: str) -> None:
        """Fail without retries if every registered container instance is smaller than the task."""
        if self.task_cpu is None or self.task_memory_mib is None:
            return
        try:
            registered = registered_sizes(self.client, str(self.cluster))
        except Exception as exc:  # not knowing only means waiting, as before
            self.log.warning("Could not read the cluster's container instances: %s", exc)
            return
        task = Size(self.task_cpu, self.task_memory_mib)
        refusal = placement_refusal(task=task, registered=registered)
        if refusal:
            raise AirflowFailException(f"ECS cannot place this task ({why}): {refusal}")

    def _wait_for_room(self, context: Context, why: str) -> None:
        map_index = getattr(context.get("ti"), "map_index", -1) or 0
        # Spread the retries of many waiting tasks over a few seconds.
        delay = self.capacity_retry_s + (max(map_index, 0) % 10) * self.capacity_retry_s / 20
        delay = max(delay, self.defer_settle_s)  # see DEFER_SETTLE_S
        remaining_s = self._deadline - time.time()
        if remaining_s <= 0:
            self._fail_at_deadline(f"The cluster had no room for this task ({why})")
        delay = min(delay, remaining_s)
        self.log.warning(
            "The cluster has no room for this task now (%s); calling RunTask again in %.0f s "
            "(deadline %s). This wait does not use up a retry.",
            why,
            delay,
            deadline_text(self._deadline),
        )
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=delay)),
            method_name="run_task_again",
            kwargs={"waiting_for": why},
        )

    def run_task_again(
        self,
        context: Context,
        event: Any = None,
        deadline_ts: float | None = None,
        waiting_for: str | None = None,
    ) -> Any:
        return self.execute(context, deadline_ts=deadline_ts, waiting_for=waiting_for)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        deadline_ts: float | None = None,
    ) -> Any:
        self._set_deadline(context, deadline_ts)
        validated = validate_execute_complete_event(event)
        if validated.get("status") == DEADLINE_STATUS:
            self.arn = validated.get("task_arn")
            if not validated.get("stopped"):
                self._stop_own_tasks(context, self._stop_reason)
            self._fail_at_deadline(f"ECS task {self.arn} stopped")
        if validated.get("status") != "success":
            raise AirflowException(f"Error in task execution: {validated}")
        self.arn = validated["task_arn"]
        self.cluster = validated["cluster"]
        lost = self._host_lost()
        if lost:
            self.log.warning(
                "ECS task %s lost its host (%s): running it again on another instance, "
                "without using a retry (deadline %s)",
                self.arn,
                lost,
                deadline_text(self._deadline),
            )
            self.arn = None
            return self.execute(context, deadline_ts=self._deadline)
        try:
            self._after_execution()
        except AirflowSkipException:
            raise
        except AirflowException as exc:
            self.last_exit_code = self._exit_code()
            if self.last_exit_code in FINAL_EXITS:
                raise AirflowFailException(exit_message(self.last_exit_code, str(exc))) from exc
            raise
        return self._last_log_line()

    def _host_lost(self) -> str | None:
        """Why ECS stopped the task if its host went away (reclaimed, terminated), else None."""
        try:
            client: Any = self.client
            tasks = client.describe_tasks(cluster=self.cluster, tasks=[self.arn])["tasks"]
        except Exception:  # the provider's own check describes it again and reports errors
            return None
        for task in tasks:
            reason = str(task.get("stoppedReason", ""))
            if task.get("stopCode") in HOST_GONE_STOP_CODES or HOST_GONE.match(reason):
                return f"{task.get('stopCode', '')}: {reason}".strip(": ")
        return None

    def _last_log_line(self) -> str | None:
        """The container's last log line; a CloudWatch error is a warning (the exit code rules)."""
        if not self._aws_logs_enabled():
            return None
        try:
            logs: Any = AwsLogsHook(
                aws_conn_id=self.aws_conn_id, region_name=self.resolve_awslogs_region()
            ).conn
            one = logs.get_log_events(
                logGroupName=self.awslogs_group,
                logStreamName=self._get_logs_stream_name(),
                startFromHead=False,
                limit=1,
            )
        except Exception as exc:
            self.log.warning(
                "The container exited 0, but its last log line could not be read: %s", exc
            )
            return None
        events = one.get("events") or []
        return str(events[0]["message"]) if events else None

    def _exit_code(self) -> int | None:
        if not self.arn:
            return None
        try:
            client: Any = self.client
            tasks = client.describe_tasks(cluster=self.cluster, tasks=[self.arn])["tasks"]
        except Exception:  # only refines the error message
            return None
        for task in tasks:
            for container in task.get("containers", []):
                if container.get("name") == self.container_name and "exitCode" in container:
                    return int(container["exitCode"])
        return None


class BersimEcsAggregateOperator(PublishResultsMixin, BersimEcsOperator):
    """`bersim aggregate` on ECS, then the results link and run note (even when partial)."""

    def __init__(self, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        deadline_ts: float | None = None,
    ) -> Any:
        try:
            result = super().execute_complete(context, event, deadline_ts)
        except AirflowFailException:
            if self.last_exit_code == EXIT_MISSING_TASKS:
                self.publish_results(context, partial=True)
            raise
        summary = self.publish_results(context, partial=False)
        self.check_simulations(context)
        return summary or result


def _ecs_kwargs(settings: Settings) -> dict[str, Any]:
    """What every ECS task of the DAG shares."""
    timeout_s = settings.task_timeout_s
    kwargs: dict[str, Any] = {
        "cluster": settings.cluster_name,
        "task_definition": settings.task_definition,
        "launch_type": "EC2",
        "container_name": settings.container_name,
        "aws_conn_id": settings.aws_conn_id,
        "region_name": settings.region,
        "botocore_config": ADAPTIVE_RETRIES,
        "reattach": True,
        "deferrable": True,
        "waiter_delay": settings.waiter_delay_s,
        "waiter_max_attempts": (timeout_s + _WAITER_SLACK_S) // settings.waiter_delay_s + 1,
        "execution_timeout": timedelta(seconds=timeout_s),
        "capacity_retry_s": settings.capacity_retry_s,
        "defer_settle_s": settings.defer_settle_s,
        "task_timeout_s": timeout_s,
        "task_cpu": settings.task_cpu,
        "task_memory_mib": settings.task_memory_mib,
    }
    if settings.log_group:
        kwargs["awslogs_group"] = settings.log_group
        kwargs["awslogs_stream_prefix"] = settings.log_stream_prefix_for_operator
        kwargs["awslogs_region"] = settings.region
    return kwargs


def scale_out(settings: Settings) -> BaseOperator:
    return ScaleOutSensor(
        task_id="scale_out",
        desired=CLUSTER_SIZE_TEMPLATE,
        timeout_s="{{ params.scale_out_timeout_s }}",
        settings=settings,
    )


def scale_in(settings: Settings) -> BaseOperator:
    return ScaleInSensor(
        task_id="scale_in",
        desired=0,
        timeout_s="{{ params.scale_in_timeout_s }}",
        settings=settings,
        trigger_rule=TriggerRule.ALL_DONE,
    )


def simulate(settings: Settings, *, result_check: ResultCheck | None = None) -> Any:
    """The mapped simulate task, still to be `.expand(command=...)`-ed.

    result_check: the study's lookup of a result already written (no simulation runs twice).
    """
    return BersimEcsOperator.partial(
        task_id="simulate",
        max_active_tis_per_dagrun=settings.max_parallel_tasks,
        result_check=result_check,
        **_ecs_kwargs(settings),
    )


def aggregate(settings: Settings, *, command: Any) -> BaseOperator:
    return BersimEcsAggregateOperator(
        task_id="aggregate",
        command=command,
        settings=settings,
        trigger_rule=TriggerRule.ALL_DONE,
        **_ecs_kwargs(settings),
    )
