"""ecs.py: one deadline per try, placement failures as ECS reports them, logs that cannot fail
a container that succeeded, and no simulation run twice. botocore's Stubber checks every request
against the ECS service model; S3 and CloudWatch Logs are moto's (mock_aws)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
from botocore.stub import ANY, Stubber
from moto import mock_aws

from windows_batch import task_result
from windows_batch.cluster import run_task_group
from windows_batch.ecs import (
    TRIGGER_GRACE_S,
    BersimEcsOperator,
    placement_failure_kind,
)
from windows_batch_triggers.deadline import DeadlineTaskDoneTrigger

REGION = "us-east-1"
CLUSTER = "wb-cluster"
TASK_ARN = f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/0123456789abcdef"
BUCKET = "wb-results"
OUTPUT = f"s3://{BUCKET}/sim/task_results/manual__1/task-00003.json"
COMMAND = [
    "simulate",
    "--ebn0-db",
    "4",
    "--max-bits",
    "100000",
    "--seed",
    "17",
    "--target-errors",
    "25",
    "--task-index",
    "3",
    "--output",
    OUTPUT,
]
TIMEOUT_S = 600
RESULT = {
    "schema": "bersim.task_result/1",
    "task_index": 3,
    "ebn0_db": 4.0,
    "bits": 60000,
    "errors": 25,
    "seed": 17,
    "target_errors": 25,
    "max_bits": 100000,
    "elapsed_s": 0.5,
    "provenance": {},
    "ber": 25 / 60000,
}


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AIRFLOW_CONN_AWS_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def context(started: datetime | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="windows-batch-compute-dag",
        task_id="simulate",
        run_id="manual__1",
        map_index=3,
        start_date=started or datetime.now(UTC),
        try_number=1,
        xcom_push=lambda **_: None,
    )
    return {"ti": ti}


def operator(**kwargs: Any) -> BersimEcsOperator:
    return BersimEcsOperator(
        task_id="simulate",
        command=COMMAND,
        cluster=CLUSTER,
        task_definition="wb-bersim",
        container_name="bersim",
        launch_type="EC2",
        aws_conn_id=None,
        region_name=REGION,
        reattach=True,
        deferrable=True,
        waiter_delay=1,
        waiter_max_attempts=10_000,
        capacity_retry_s=30,
        task_timeout_s=TIMEOUT_S,
        **kwargs,
    )


@pytest.fixture
def ecs_stub() -> Iterator[tuple[BersimEcsOperator, Stubber]]:
    op = operator()
    client = boto3.client("ecs", region_name=REGION)
    op.__dict__["client"] = client  # the operator's cached boto3 client
    with Stubber(client) as stubber:
        yield op, stubber
        stubber.assert_no_pending_responses()


class Containing:
    """Matches a request parameter (a string) that contains `part`."""

    def __init__(self, part: str) -> None:
        self.part = part

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.part in other

    def __hash__(self) -> int:
        return hash(self.part)

    def __repr__(self) -> str:
        return f"<containing {self.part!r}>"


def expect_run_task(stubber: Stubber, response: dict[str, Any]) -> None:
    stubber.add_response(
        "list_tasks",
        {"taskArns": []},
        {"cluster": CLUSTER, "desiredStatus": "RUNNING", "startedBy": ANY},
    )
    stubber.add_response(
        "run_task",
        response,
        {
            "cluster": CLUSTER,
            "taskDefinition": "wb-bersim",
            "overrides": ANY,
            "startedBy": ANY,
            "launchType": "EC2",
            "group": run_task_group("windows-batch-compute-dag", "manual__1"),
        },
    )


@pytest.mark.parametrize(
    ("reasons", "kind"),
    [
        pytest.param(["RESOURCE:CPU"], "wait", id="cpu"),
        pytest.param(["RESOURCE:MEMORY", "AGENT"], "wait", id="memory-and-agent"),
        pytest.param(["AGENT"], "wait", id="agent-disconnected"),
        pytest.param(["RESOURCE:CPU", "ATTRIBUTE"], "fail", id="cpu-and-attribute"),
        pytest.param(["ATTRIBUTE"], "fail", id="attribute"),
        pytest.param(["MISSING"], "fail", id="missing"),
        pytest.param([], "fail", id="no-reason"),
    ],
)
def test_placement_failures_are_waits_only_for_room_and_agents(
    reasons: list[str], kind: str
) -> None:
    assert placement_failure_kind([{"reason": r} for r in reasons]) == kind


def test_a_placement_failure_that_is_not_about_room_fails_at_once_with_ecs_reason(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    op, stubber = ecs_stub
    failures = [{"arn": "arn:ci/1", "reason": "ATTRIBUTE", "detail": "ecs.os-type"}]
    expect_run_task(stubber, {"tasks": [], "failures": failures})
    with pytest.raises(AirflowFailException, match=r"cannot place .*ATTRIBUTE \(ecs.os-type\)"):
        op.execute(context())


def test_no_room_waits_within_the_deadline_and_carries_it(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    op, stubber = ecs_stub
    started = datetime.now(UTC) - timedelta(seconds=TIMEOUT_S - 5)  # 5 s left
    expect_run_task(stubber, {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY"}]})
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(started))
    deadline = started.timestamp() + TIMEOUT_S
    assert isinstance(deferred.value.trigger, TimeDeltaTrigger)
    assert deferred.value.kwargs == {
        "deadline_ts": pytest.approx(deadline),
        "waiting_for": "RESOURCE:MEMORY",
    }
    # Not capacity_retry_s (30 s): the wait ends by the deadline.
    assert deferred.value.trigger.moment <= datetime.fromtimestamp(deadline + 1, UTC)
    assert deferred.value.timeout.total_seconds() <= 5 + TRIGGER_GRACE_S + 1


def test_a_capacity_wait_is_never_shorter_than_the_settle_time() -> None:
    """CAPACITY_RETRY_S below DEFER_SETTLE_S: the wait lasts the settle time."""
    op = operator(defer_settle_s=7)
    op.capacity_retry_s = 1
    client = boto3.client("ecs", region_name=REGION)
    op.__dict__["client"] = client
    with Stubber(client) as stubber:
        expect_run_task(stubber, {"tasks": [], "failures": [{"reason": "RESOURCE:CPU"}]})
        before = datetime.now(UTC)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, TimeDeltaTrigger)
    assert trigger.moment >= before + timedelta(seconds=7)


def test_no_container_instance_registered_yet_is_a_wait(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    op, stubber = ecs_stub
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_client_error(
        "run_task",
        service_error_code="InvalidParameterException",
        service_message="No Container Instances were found in your cluster.",
        http_status_code=400,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    assert deferred.value.method_name == "run_task_again"


def test_the_capacity_wait_ends_at_the_deadline_carried_through_deferrals() -> None:
    """Resumed after its last wait, with the deadline from next_kwargs: it fails, no RunTask."""
    op = operator()
    carried = time.time() - 1
    # A fresh start date would give a full TASK_TIMEOUT_S again; the carried deadline wins.
    with pytest.raises(
        AirflowException, match=r"no room .*\(RESOURCE:CPU\).*deadline \(TASK_TIMEOUT_S=600 s"
    ):
        op.run_task_again(
            context(datetime.now(UTC)), event=None, deadline_ts=carried, waiting_for="RESOURCE:CPU"
        )


def test_the_container_wait_is_bounded_by_the_same_deadline(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    op, stubber = ecs_stub
    started = datetime.now(UTC) - timedelta(seconds=100)
    task = {"taskArn": TASK_ARN, "containers": [{"name": "bersim"}]}
    expect_run_task(stubber, {"tasks": [task], "failures": []})
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(started))
    trigger = deferred.value.trigger
    assert isinstance(trigger, DeadlineTaskDoneTrigger)
    deadline = started.timestamp() + TIMEOUT_S
    assert trigger.deadline_ts == pytest.approx(deadline)
    assert "TASK_TIMEOUT_S=600 s" in trigger.stop_reason
    assert deferred.value.kwargs == {"deadline_ts": pytest.approx(deadline)}
    # Airflow's own trigger timeout: only a little past the deadline (not 70 days).
    assert deferred.value.timeout.total_seconds() == pytest.approx(
        TIMEOUT_S - 100 + TRIGGER_GRACE_S, abs=5
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "windows_batch_triggers.deadline.DeadlineTaskDoneTrigger"
    assert kwargs["deadline_ts"] == trigger.deadline_ts
    # The first check waits DEFER_SETTLE_S (Airflow 3.3.1's stale-report race, deadline.py).
    assert kwargs["settle_s"] == op.defer_settle_s == 10


def test_at_the_deadline_the_task_is_stopped_with_a_reason_naming_it(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    """The trigger could not stop it: the resumed try stops it, then fails (retryable)."""
    op, stubber = ecs_stub
    deadline = time.time() - 2
    stubber.add_response("list_tasks", {"taskArns": [TASK_ARN]})
    stubber.add_response(
        "stop_task",
        {"task": {"taskArn": TASK_ARN}},
        {"cluster": CLUSTER, "task": TASK_ARN, "reason": Containing("TASK_TIMEOUT_S=600 s")},
    )
    event = {"status": "deadline", "task_arn": TASK_ARN, "cluster": CLUSTER, "stopped": False}
    with pytest.raises(AirflowException, match="reached its deadline") as failed:
        op.execute_complete(context(), event=event, deadline_ts=deadline)
    assert not isinstance(failed.value, AirflowFailException)  # a retry starts afresh


def test_a_timed_out_trigger_stops_the_tasks_of_this_try(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    """Airflow's trigger timeout (triggerer gone): resume_execution('__fail__') stops it."""
    op, stubber = ecs_stub
    started = datetime.now(UTC) - timedelta(seconds=TIMEOUT_S + 60)
    stubber.add_response("list_tasks", {"taskArns": [TASK_ARN]})
    stubber.add_response(
        "stop_task",
        {"task": {"taskArn": TASK_ARN}},
        {"cluster": CLUSTER, "task": TASK_ARN, "reason": Containing("deadline TASK_TIMEOUT_S")},
    )
    with pytest.raises(Exception, match="Trigger") as failed:
        op.resume_execution("__fail__", {"error": "Trigger timeout"}, context(started))
    assert type(failed.value).__name__ == "TaskDeferralTimeout"


def describe(exit_code: int) -> dict[str, Any]:
    container = {"name": "bersim", "lastStatus": "STOPPED", "exitCode": exit_code}
    return {"tasks": [{"taskArn": TASK_ARN, "lastStatus": "STOPPED", "containers": [container]}]}


def test_a_log_fetch_error_after_exit_0_is_a_success() -> None:
    op = operator(awslogs_group="/ecs/wb/bersim", awslogs_stream_prefix="bersim/bersim")
    client = boto3.client("ecs", region_name=REGION)
    op.__dict__["client"] = client
    event = {"status": "success", "task_arn": TASK_ARN, "cluster": CLUSTER}
    with mock_aws(), Stubber(client) as stubber:
        # CloudWatch has no such log group/stream: GetLogEvents raises ResourceNotFoundException.
        for _ in range(2):  # is the host gone? then the exit code
            stubber.add_response("describe_tasks", describe(0))
        assert op.execute_complete(context(), event=event, deadline_ts=time.time() + 60) is None
        for _ in range(2):
            stubber.add_response("describe_tasks", describe(1))
        with pytest.raises(AirflowException, match="not in success state"):
            op.execute_complete(context(), event=event, deadline_ts=time.time() + 60)


def s3_with(body: bytes | None) -> Any:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    if body is not None:
        s3.put_object(Bucket=BUCKET, Key=OUTPUT.split(f"{BUCKET}/", 1)[1], Body=body)
    return s3


def test_an_existing_valid_result_is_reported_not_simulated_again(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    op, _stubber = ecs_stub  # no ECS call may happen: the Stubber has no response queued
    op.result_check = task_result
    with mock_aws():
        s3_with(json.dumps(RESULT).encode())
        summary = op.execute(context())
    assert summary.startswith(f"existing result {OUTPUT}: task 3, Eb/N0 4 dB, 60000 bits")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="absent"),
        pytest.param(b"{not json", id="corrupt"),
        pytest.param(json.dumps({**RESULT, "seed": 18}).encode(), id="other-seed"),
        pytest.param(json.dumps({**RESULT, "task_index": 4}).encode(), id="other-index"),
    ],
)
def test_a_missing_or_foreign_result_is_simulated(
    body: bytes | None, ecs_stub: tuple[BersimEcsOperator, Stubber]
) -> None:
    op, stubber = ecs_stub
    op.result_check = task_result
    task = {"taskArn": TASK_ARN, "containers": [{"name": "bersim"}]}
    expect_run_task(stubber, {"tasks": [task], "failures": []})
    with mock_aws():
        s3_with(body)
        with pytest.raises(TaskDeferred):
            op.execute(context())


@pytest.mark.parametrize(
    "stopped",
    [
        pytest.param(
            {"stoppedReason": "Host EC2 (instance i-0123456789abcdef0) terminated."}, id="host"
        ),
        pytest.param(
            {"stopCode": "SpotInterruption", "stoppedReason": "Your Spot Task was interrupted."},
            id="spot",
        ),
    ],
)
def test_a_task_whose_host_went_away_runs_again_in_the_same_try(
    stopped: dict[str, str], ecs_stub: tuple[BersimEcsOperator, Stubber]
) -> None:
    op, stubber = ecs_stub
    task = {**describe(137)["tasks"][0], **stopped}
    stubber.add_response("describe_tasks", {"tasks": [task]})
    replacement = {"taskArn": TASK_ARN.replace("0123", "4567"), "containers": [{"name": "bersim"}]}
    expect_run_task(stubber, {"tasks": [replacement], "failures": []})
    deadline = time.time() + 300
    event = {"status": "success", "task_arn": TASK_ARN, "cluster": CLUSTER}
    # Not a failure (no retry used): a new container, awaited until the same deadline.
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete(context(), event=event, deadline_ts=deadline)
    assert isinstance(deferred.value.trigger, DeadlineTaskDoneTrigger)
    assert deferred.value.trigger.task_arn == replacement["taskArn"]
    assert deferred.value.trigger.deadline_ts == deadline


def test_a_trigger_that_failed_before_the_deadline_leaves_the_container_to_the_retry(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    """No ECS call (the Stubber has none queued): the retry reattaches to the running task."""
    op, _stubber = ecs_stub
    with pytest.raises(Exception, match="Trigger failure") as failed:
        op.resume_execution("__fail__", {"error": "Trigger failure"}, context())
    assert type(failed.value).__name__ == "TaskDeferralError"


def test_a_triggerer_that_cannot_import_our_trigger_waits_on_the_worker_until_the_deadline(
    ecs_stub: tuple[BersimEcsOperator, Stubber],
) -> None:
    """Airflow 3.3's triggerer lacks the DAG folder on sys.path (apache/airflow#65455)."""
    op, stubber = ecs_stub
    started = datetime.now(UTC) - timedelta(seconds=TIMEOUT_S - 2)  # 2 s left
    running = {"tasks": [{"taskArn": TASK_ARN, "lastStatus": "RUNNING", "containers": []}]}
    stubber.add_response("list_tasks", {"taskArns": [TASK_ARN]})  # is one running?
    stubber.add_response("list_tasks", {"taskArns": [TASK_ARN]})  # which one
    stubber.add_response("describe_tasks", running)  # the waiter's one poll (1 s delay)
    stubber.add_response("list_tasks", {"taskArns": [TASK_ARN]})  # stop it at the deadline
    stubber.add_response(
        "stop_task",
        {"task": {"taskArn": TASK_ARN}},
        {"cluster": CLUSTER, "task": TASK_ARN, "reason": Containing("TASK_TIMEOUT_S=600 s")},
    )
    failed = {
        "error": "Trigger failure",
        "traceback": ["ModuleNotFoundError: No module named 'windows_batch_triggers'\n"],
    }
    with pytest.raises(AirflowException, match="reached its deadline"):
        op.resume_execution("__fail__", failed, context(started))
