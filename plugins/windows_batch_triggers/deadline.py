"""One deadline per try of an ECS task, across every deferral, and ECS tasks that stop with it.

Airflow 3.3.1 does not apply `execution_timeout` while a task is deferred: the execution API
stores only the trigger's own timeout (api_fastapi/execution_api/routes/task_instances.py,
"TODO: HANDLE execution timeout later") and each resumed method gets a fresh timeout
(sdk/execution_time/task_runner.py, "TODO: handle timeout in case of deferral"). So the
operator computes one deadline when a try starts (the try's start date + TASK_TIMEOUT_S) and
carries it through every deferral in `next_kwargs` (which survive a deferral, and whose
presence keeps the try's start date on resume, routes/task_instances.py `ti_run`).

`DeadlineTaskDoneTrigger` is the provider's TaskDoneTrigger with three changes:
- it ends at the deadline: it stops the ECS task (StopTask, a reason that names the deadline)
  and fires a "deadline" event, so the stop does not wait for a free worker slot;
- `on_kill`, which Airflow 3.3's triggerer calls only when a person marks the deferred task
  failed or success or clears it (triggers/base.py `BaseTrigger.on_kill`), stops the ECS task;
- an error while forwarding CloudWatch log lines is a warning, not the end of the wait;
- its first check waits `settle_s` (DEFER_SETTLE_S): Airflow 3.3.1's scheduler fails a task
  whose trigger fired before it had read the worker's report of the deferral. The worker that
  deferred reports "success" for the try once its process has exited (seconds later under load);
  if the resumed try is already queued or running by then, the scheduler finds the executor
  no longer tracking it (`executor.has_task` is False), logs "state mismatch" and fails the try
  (jobs/scheduler_job_runner.py `process_executor_events`; apache/airflow#72716, open, and
  #67287: only the `scheduled` state is guarded in 3.3.1). A container that has already ended
  when the wait starts, e.g. a retry that reattaches to it, would otherwise fire at once.
The triggerer imports it as `windows_batch_triggers.deadline.DeadlineTaskDoneTrigger` from the
plugins folder, which Airflow puts on every component's sys.path (see the package docstring).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.triggers.ecs import TaskDoneTrigger
from airflow.triggers.base import TriggerEvent

DEADLINE_STATUS = "deadline"
USER_KILL_REASON = (
    "Stopped by Airflow: a person marked its task failed or success, or cleared it "
    "(windows-batch trigger on_kill)"
)
_MAX_REASON_CHARS = 255
"""StopTask's `reason` is at most 255 characters."""


def deadline_text(deadline_ts: float) -> str:
    """The deadline as people read it in logs: UTC, to the second."""
    return datetime.fromtimestamp(deadline_ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def deadline_reason(*, timeout_s: int, deadline_ts: float) -> str:
    """StopTask reason for a try that reached its deadline (names TASK_TIMEOUT_S)."""
    reason = (
        f"Stopped by Airflow: its try reached the deadline TASK_TIMEOUT_S={timeout_s} s "
        f"after it started ({deadline_text(deadline_ts)})"
    )
    return reason[:_MAX_REASON_CHARS]


def try_started_ts(context: Mapping[str, Any]) -> float:
    """When this try started (epoch seconds), as the API server keeps it across deferrals.

    The Task SDK's `ti.start_date` is the worker's clock at this resume; the server's start
    date of the try comes with the resume context (`ti_run` returns it with next_method).
    """
    ti = context.get("ti")
    server_context = getattr(ti, "_ti_context_from_server", None)
    for start in (getattr(server_context, "start_date", None), getattr(ti, "start_date", None)):
        if isinstance(start, datetime):
            return start.timestamp()
    return time.time()


def try_deadline_ts(
    context: Mapping[str, Any], *, timeout_s: int, carried_ts: float | None = None
) -> float:
    """The try's deadline: the one carried through the deferrals, else start + timeout_s."""
    if carried_ts is not None:
        return float(carried_ts)
    return try_started_ts(context) + timeout_s


class DeadlineTaskDoneTrigger(TaskDoneTrigger):
    """TaskDoneTrigger that ends at `deadline_ts` (epoch seconds), stopping the ECS task.

    stop_reason: the StopTask reason used at the deadline.
    settle_s: seconds before the first check (0 for a trigger serialized before it existed).
    """

    def __init__(
        self, *, deadline_ts: float, stop_reason: str, settle_s: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.deadline_ts = float(deadline_ts)
        self.stop_reason = stop_reason
        self.settle_s = float(settle_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs.update(
            deadline_ts=self.deadline_ts, stop_reason=self.stop_reason, settle_s=self.settle_s
        )
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        remaining_s = self.deadline_ts - time.time()
        try:
            # The parent yields one event and returns (or raises when its attempts run out).
            parent: Any = super().run()
            async with aclosing(parent) as events, asyncio.timeout(max(remaining_s, 0)):
                await asyncio.sleep(self.settle_s)  # the deadline still ends it
                event: TriggerEvent = await anext(events)
        except TimeoutError:
            stopped = await self.stop_task(self.stop_reason)
            yield TriggerEvent(
                {
                    "status": DEADLINE_STATUS,
                    "task_arn": self.task_arn,
                    "cluster": self.cluster,
                    "stopped": stopped,
                    "deadline_ts": self.deadline_ts,
                }
            )
            return
        yield event

    async def on_kill(self) -> None:
        await self.stop_task(USER_KILL_REASON)

    async def stop_task(self, reason: str) -> bool:
        """StopTask (idempotent); True if ECS accepted it. Errors are logged, not raised."""
        try:
            hook = EcsHook(
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                config=self.botocore_config,
            )
            async with await hook.get_async_conn() as ecs:
                await ecs.stop_task(
                    cluster=self.cluster, task=self.task_arn, reason=reason[:_MAX_REASON_CHARS]
                )
        except Exception as exc:  # the operator stops it again when it resumes
            self.log.warning("Could not stop ECS task %s: %s", self.task_arn, exc)
            return False
        self.log.warning("Stopped ECS task %s: %s", self.task_arn, reason)
        return True

    async def _forward_logs(self, logs_client: Any, next_token: str | None = None) -> str | None:
        try:
            return await super()._forward_logs(logs_client, next_token)
        except Exception as exc:  # throttling or a missing stream must not end the wait
            self.log.warning("Could not forward the container's log lines (will retry): %s", exc)
            return next_token
