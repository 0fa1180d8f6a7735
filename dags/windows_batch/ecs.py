"""The ECS backend: a study's container on the cluster, one ECS task per chunk (Airflow task).

The fan-out and the aggregate are `EcsRunTaskOperator`s (deferrable: while a container runs, the
Airflow task waits in the triggerer, not on a worker; `reattach=True`: a retry re-attaches to
its still-running container instead of starting a second one). The container runs the engine's
task runner (docker/base, `wbrun`); its command override names the run's manifest and the
chunk (`run --manifest s3://... --chunk N --at OFFSET:LENGTH --sha DIGEST`): a few hundred
characters whatever the chunk holds (ECS caps overrides at 8,192).

One deadline per try (deadline.py): TASK_TIMEOUT_S from the try's start, carried through every
deferral. The capacity waits end at it, and so does the wait for the container, which is then
stopped (StopTask, reason naming the deadline) before the try fails, without a retry (below).
A person marking a deferred task failed or success stops its container (the trigger's on_kill);
a running one is stopped by the provider's `on_kill`.

Capacity. Airflow fixes `max_active_tis_per_dagrun` at parse time, so it cannot follow the
run's `cluster_size`: it caps the fan-out at MAX_PARALLEL_TASKS (by default the largest cluster
allowed x slots per instance). When RunTask still finds no room, ECS says why in `failures`
(`RESOURCE:CPU`, `RESOURCE:MEMORY`, ... and `AGENT` for an instance whose agent is not
connected) or refuses with "No Container Instances were found in your cluster" while instances
are still registering: the task then waits in the triggerer for CAPACITY_RETRY_S and calls
RunTask again, without using up an Airflow retry, until the deadline. Any other placement
failure (`ATTRIBUTE`, `MISSING`, ...) fails at once with ECS's reason. So does a `RESOURCE:*`
failure when the task is larger than every registered container instance (capacity.py): no
amount of waiting makes room for it.

No finished chunk runs twice: before it starts a container, a try looks for the task runner's
record of its chunk (`chunks/done/...` under the run's engine prefix, matching the chunk's
digest); when there is one it is reported instead. Inside a chunk, the runner skips the items it
already finished. A try that reaches its deadline fails without a retry: a retry would only
reach it again.

A task whose host went away (ECS stops it with stoppedReason "Host EC2 (instance i-...)
terminated." or the stop code SpotInterruption) runs again on another instance within the same
try and deadline, like a capacity wait: an interruption costs time, not a retry.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.amazon.aws.exceptions import EcsOperatorError
from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.amazon.aws.triggers.ecs import TaskDoneTrigger
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.identifiers import generate_uuid
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from botocore.exceptions import ClientError, WaiterError

from windows_batch import manifest
from windows_batch.capacity import Size, placement_refusal
from windows_batch.cluster import ADAPTIVE_RETRIES, registered_sizes, run_task_group
from windows_batch.objects import Objects
from windows_batch.publish import PublishMixin
from windows_batch.runs import (
    ChunkRef,
    budget_exhausted,
    context_for,
    exit_message,
    is_final,
    params_of,
    run_budget,
    runner_args,
)
from windows_batch_triggers.deadline import (
    DEADLINE_STATUS,
    DeadlineTaskDoneTrigger,
    deadline_reason,
    deadline_text,
    try_deadline_ts,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from windows_batch.catalog import FailureBudget
    from windows_batch.settings import Settings
    from windows_batch.study import Study

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
_MAX_SPREAD_S = 10.0


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


class ChunkEcsOperator(EcsRunTaskOperator):
    """Run the task runner for one chunk (or the aggregate) as one ECS task, within one
    deadline per try.

    study, settings: the study and the deployment settings; chunk: the chunk reference
    (plan_tasks' XCom, mapped), None for the aggregate; budget: the run's failure budget;
    capacity_retry_s: seconds to wait before calling RunTask again when the cluster has no room;
    task_timeout_s: the try's deadline, in seconds from its start, across every deferral.
    The study's final exit codes (and the runner's own) fail without retries, and so does a
    task larger than every registered container instance (the study's cpu and memory_mib).
    """

    template_fields = (*EcsRunTaskOperator.template_fields, "chunk")
    ui_color = "#fbe3c8"

    def __init__(
        self,
        *,
        study: Study,
        settings: Settings,
        chunk: Any = None,
        budget: FailureBudget | None = None,
        capacity_retry_s: int = 30,
        defer_settle_s: int = 10,
        task_timeout_s: int = 7200,
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(overrides=overrides or {}, **kwargs)
        self.study = study
        self.settings = settings
        self.chunk = chunk
        self.budget = budget
        self.capacity_retry_s = capacity_retry_s
        self.defer_settle_s = defer_settle_s
        self.task_timeout_s = task_timeout_s
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
        # Not retried: a retry gets the same deadline and would only reach it again.
        raise AirflowFailException(
            f"{what}: this try reached its deadline (TASK_TIMEOUT_S={self.task_timeout_s} s "
            f"after it started, {deadline_text(self._deadline)})"
        )

    def _spread_first_call(self, ti: Any) -> None:
        """Spread the first RunTask of the chunks that start together over a few seconds
        (RUN_TASK_RATE per second); botocore's adaptive mode absorbs ECS throttling beyond."""
        index = max(int(getattr(ti, "map_index", 0) or 0), 0)
        wave = self.settings.parallel_tasks(1)
        delay = min((index % max(wave, 1)) / self.settings.run_task_rate, _MAX_SPREAD_S)
        if delay > 0:
            time.sleep(delay)

    def runner_command(self, context: Context) -> list[str]:
        """The container command: the runner's arguments for this chunk or the aggregate."""
        return runner_args(
            self.study.info, self.settings, params_of(context), str(context["run_id"]), self.chunk
        )

    def execute(
        self, context: Context, deadline_ts: float | None = None, waiting_for: str | None = None
    ) -> Any:
        first = deadline_ts is None
        self._set_deadline(context, deadline_ts)
        if time.time() >= self._deadline:
            if waiting_for:
                self._fail_at_deadline(f"The cluster had no room for this task ({waiting_for})")
            self._fail_at_deadline("No ECS task started")
        ti: Any = context["ti"]
        if first and self.chunk is not None:
            spent = budget_exhausted(
                ti,
                task_id=self.task_id,
                # The form's budget, not only study.yaml's: the run's own value decides.
                budget=run_budget(self.study.info, params_of(context), default=self.budget),
                chunks=int(ti.xcom_pull(task_ids="plan_tasks", key="chunk_count") or 1),
            )
            if spent:
                raise AirflowSkipException(spent)
            self._spread_first_call(ti)
        self.overrides = container_overrides(str(self.container_name), self.runner_command(context))
        # scale_in stops whatever of this run's group is still running.
        self.group = run_task_group(str(ti.dag_id), str(ti.run_id))
        existing = self._existing_result(context)
        if existing is not None:
            self.log.info("Not running it again: %s", existing)
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

    def _existing_result(self, context: Context) -> str | None:
        """The task runner's record of this chunk, if it finished it already (same digest)."""
        if self.chunk is None:
            return None  # the aggregate runs again: it reads what exists now
        ref = ChunkRef.parse(self.chunk)
        run = context_for(
            self.study.info, self.settings, params_of(context), str(context["run_id"])
        )
        uri = run.engine_uri + manifest.done_key(ref.chunk, ref.items)
        try:
            data = Objects(self.settings).read(uri)
        except Exception as exc:  # running it again is only slower: finished items are skipped
            self.log.warning("Could not look for this chunk's record at %s: %s", uri, exc)
            return None
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("sha") != ref.sha:
            self.log.warning("%s is not this chunk's record (digest differs): running it", uri)
            return None
        return f"chunk {ref.chunk} already done ({record.get('done')} work items): {uri}"

    def _fail_if_it_never_fits(self, why: str) -> None:
        """Fail without retries if every registered container instance is smaller than the task."""
        try:
            registered = registered_sizes(self.client, str(self.cluster))
        except Exception as exc:  # not knowing only means waiting, as before
            self.log.warning("Could not read the cluster's container instances: %s", exc)
            return
        task = Size(self.study.info.cpu, self.study.info.memory_mib)
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
            finals = self.study.info.final_exit_codes
            message = exit_message(self.last_exit_code, final_codes=finals, detail=str(exc))
            if is_final(self.last_exit_code, finals):
                raise AirflowFailException(message) from exc
            raise AirflowException(message) from exc
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


class AggregateEcsOperator(PublishMixin, ChunkEcsOperator):
    """The aggregate step on ECS, then the results link and run note (even when it failed)."""

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        deadline_ts: float | None = None,
    ) -> Any:
        try:
            result = super().execute_complete(context, event, deadline_ts)
        except AirflowException:
            if self.last_exit_code is not None:
                self.publish(context, partial=True)
            raise
        summary = self.publish(context, partial=False)
        return summary or result


def ecs_kwargs(settings: Settings, study: Study) -> dict[str, Any]:
    """What every ECS task of a study's DAG shares."""
    timeout_s = settings.task_timeout_s
    kwargs: dict[str, Any] = {
        "cluster": settings.cluster_name,
        "task_definition": study.info.task_family(settings.task_family_prefix),
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
        "study": study,
        "settings": settings,
    }
    if settings.log_group:
        kwargs["awslogs_group"] = settings.log_group
        kwargs["awslogs_stream_prefix"] = settings.log_stream_prefix_for_operator(study.info.name)
        kwargs["awslogs_region"] = settings.region
    return kwargs
