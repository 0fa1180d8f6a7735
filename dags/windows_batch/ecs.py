"""The ECS backend: bersim in Windows containers on the cluster, one ECS task per Airflow task.

`simulate` and `aggregate` are `EcsRunTaskOperator`s (deferrable: while a container runs, the
Airflow task waits in the triggerer, not on a worker; `reattach=True`: a retry re-attaches to
its still-running container instead of starting a second one). The container command is the
planned bersim argv (`command`), put into the task's container overrides.

Capacity. Airflow fixes `max_active_tis_per_dagrun` at parse time, so it cannot follow the
run's `cluster_size`: it caps simulations at MAX_PARALLEL_TASKS (by default the largest cluster
allowed x slots per instance). When RunTask still finds no room (a smaller cluster, an instance
being replaced, the agent not yet reporting freed resources), ECS answers with `RESOURCE:*`
failures: the task then waits in the triggerer for CAPACITY_RETRY_S and calls RunTask again,
without using up an Airflow retry. The task's `execution_timeout` bounds the total wait.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.exceptions import EcsOperatorError
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from windows_batch.cluster import ADAPTIVE_RETRIES, ScaleInSensor, ScaleOutSensor
from windows_batch.cost_report import CLUSTER_SIZE_TEMPLATE
from windows_batch.plan import EXIT_MISSING_TASKS, FINAL_EXITS, exit_message
from windows_batch.results import PublishResultsMixin

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

    from windows_batch.settings import Settings

# Slack added to the ECS waiter so that execution_timeout, not the waiter, ends a long task.
_WAITER_SLACK_S = 600


def is_capacity_failure(failures: list[dict[str, Any]]) -> bool:
    """True if RunTask placed nothing only because the cluster had no room (RESOURCE:*)."""
    reasons = [str(f.get("reason", "")) for f in failures]
    return bool(reasons) and all(r.startswith("RESOURCE:") for r in reasons)


def container_overrides(container_name: str, command: list[str]) -> dict[str, Any]:
    return {"containerOverrides": [{"name": container_name, "command": [str(a) for a in command]}]}


class BersimEcsOperator(EcsRunTaskOperator):
    """Run `bersim <command>` as one ECS task; wait (not fail) while the cluster is full.

    command: the bersim argv (container command override);
    capacity_retry_s: seconds to wait before calling RunTask again after RESOURCE:* failures.
    Exit 2 (bad input) and 3 (missing task results) fail without retries.
    """

    template_fields = (*EcsRunTaskOperator.template_fields, "command")
    ui_color = "#fbe3c8"

    def __init__(
        self,
        *,
        command: list[str],
        capacity_retry_s: int = 30,
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(overrides=overrides or {}, **kwargs)
        self.command = command
        self.capacity_retry_s = capacity_retry_s
        self.last_exit_code: int | None = None

    def execute(self, context: Context) -> Any:
        self.overrides = container_overrides(str(self.container_name), list(self.command))
        try:
            return super().execute(context)
        except EcsOperatorError as exc:
            if not is_capacity_failure(exc.failures):
                raise
            self._wait_for_room(context, exc.failures)

    def _wait_for_room(self, context: Context, failures: list[dict[str, Any]]) -> None:
        map_index = getattr(context.get("ti"), "map_index", -1) or 0
        # Spread the retries of many waiting tasks over a few seconds.
        delay = self.capacity_retry_s + (max(map_index, 0) % 10) * self.capacity_retry_s / 20
        self.log.warning(
            "The cluster has no room for this task now (%s); calling RunTask again in %.0f s. "
            "This wait does not use up a retry.",
            ", ".join(sorted({str(f.get("reason")) for f in failures})),
            delay,
        )
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=delay)),
            method_name="run_task_again",
        )

    def run_task_again(self, context: Context, event: Any = None) -> Any:
        return self.execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        try:
            return super().execute_complete(context, event)
        except AirflowSkipException:
            raise
        except AirflowException as exc:
            self.last_exit_code = self._exit_code()
            if self.last_exit_code in FINAL_EXITS:
                raise AirflowFailException(exit_message(self.last_exit_code, str(exc))) from exc
            raise

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

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        try:
            result = super().execute_complete(context, event)
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


def simulate(settings: Settings) -> Any:
    """The mapped simulate task, still to be `.expand(command=...)`-ed."""
    return BersimEcsOperator.partial(
        task_id="simulate",
        max_active_tis_per_dagrun=settings.max_parallel_tasks,
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
