"""deadline.py: the container wait ends at the try's deadline and stops the ECS task; on_kill stops
it too. The trigger runs for real (aiobotocore) against a moto server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends
from moto.server import ThreadedMotoServer

from windows_batch_triggers.deadline import (
    USER_KILL_REASON,
    DeadlineTaskDoneTrigger,
    deadline_reason,
    try_deadline_ts,
)

REGION = "us-east-1"
CLUSTER = "wb-cluster"
TASK_ARN_EXAMPLE = f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto server with our cluster, one container instance and the task definition."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name in ("AWS_PROFILE", "AIRFLOW_CONN_AWS_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    try:
        client = boto3.client("ecs", region_name=REGION)
        client.create_cluster(clusterName=CLUSTER)
        ec2 = boto3.client("ec2", region_name=REGION)
        image = ec2.describe_images()["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
        # The ECS agent's part (the server runs in this process: same moto backends).
        ecs_backends[DEFAULT_ACCOUNT_ID][REGION].register_container_instance(
            CLUSTER, instance["InstanceId"]
        )
        client.register_task_definition(
            family="wb-bersim",
            containerDefinitions=[
                {"name": "bersim", "image": "bersim", "cpu": 1024, "memory": 512}
            ],
        )
        yield client
    finally:
        server.stop()


def run_task(client: Any) -> str:
    return str(client.run_task(cluster=CLUSTER, taskDefinition="wb-bersim")["tasks"][0]["taskArn"])


def trigger(arn: str, *, deadline_ts: float, settle_s: float = 0) -> DeadlineTaskDoneTrigger:
    return DeadlineTaskDoneTrigger(
        cluster=CLUSTER,
        task_arn=arn,
        waiter_delay=1,
        waiter_max_attempts=10_000,
        aws_conn_id=None,
        region_name=REGION,
        deadline_ts=deadline_ts,
        stop_reason=deadline_reason(timeout_s=3, deadline_ts=deadline_ts),
        settle_s=settle_s,
    )


async def first_event(trig: DeadlineTaskDoneTrigger) -> Any:
    return await anext(trig.run())


def test_a_container_that_never_ends_is_stopped_at_the_deadline(ecs: Any) -> None:
    arn = run_task(ecs)
    deadline = time.time() + 3
    event = asyncio.run(first_event(trigger(arn, deadline_ts=deadline)))
    late_s = time.time() - deadline
    assert event.payload["status"] == "deadline"
    assert event.payload["stopped"] is True
    assert event.payload["task_arn"] == arn
    # The deadline, not the waiter's 10,000 attempts, ended the wait: within a poll or two.
    assert 0 <= late_s < 10, late_s
    task = ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]
    assert task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"].startswith(
        "Stopped by Airflow: its try reached the deadline TASK_TIMEOUT_S=3 s"
    )


def test_a_container_that_ends_in_time_is_not_stopped(ecs: Any) -> None:
    arn = run_task(ecs)
    ecs.stop_task(cluster=CLUSTER, task=arn, reason="Essential container in task exited")
    event = asyncio.run(first_event(trigger(arn, deadline_ts=time.time() + 30)))
    assert event.payload == {"status": "success", "task_arn": arn, "cluster": CLUSTER}
    task = ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]
    assert task["stoppedReason"] == "Essential container in task exited"


def test_a_container_that_has_already_ended_fires_only_after_the_settle_time(ecs: Any) -> None:
    """A retry that reattaches just as its container ends: the event waits DEFER_SETTLE_S, so
    the scheduler reads the deferring worker's report before the try resumes."""
    arn = run_task(ecs)
    ecs.stop_task(cluster=CLUSTER, task=arn, reason="Essential container in task exited")
    started = time.monotonic()
    event = asyncio.run(first_event(trigger(arn, deadline_ts=time.time() + 60, settle_s=2)))
    assert event.payload["status"] == "success"
    assert time.monotonic() - started >= 2


def test_the_deadline_ends_the_settle_time_too(ecs: Any) -> None:
    arn = run_task(ecs)
    started = time.monotonic()
    event = asyncio.run(first_event(trigger(arn, deadline_ts=time.time() + 1, settle_s=600)))
    assert event.payload["status"] == "deadline"
    assert event.payload["stopped"] is True
    assert time.monotonic() - started < 30


def test_a_trigger_serialized_before_the_settle_time_existed_still_loads() -> None:
    """A deferred task in flight across an upgrade: its stored kwargs have no settle_s."""
    old = trigger(TASK_ARN_EXAMPLE, deadline_ts=time.time() + 60)
    classpath, kwargs = old.serialize()
    assert classpath == "windows_batch_triggers.deadline.DeadlineTaskDoneTrigger"
    assert kwargs["settle_s"] == 0
    del kwargs["settle_s"]
    assert DeadlineTaskDoneTrigger(**kwargs).settle_s == 0


def test_on_kill_stops_the_task(ecs: Any) -> None:
    """What the triggerer calls when a person marks the deferred task failed or success."""
    arn = run_task(ecs)
    asyncio.run(trigger(arn, deadline_ts=time.time() + 600).on_kill())
    task = ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]
    assert task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"] == USER_KILL_REASON


def test_the_deadline_is_the_carried_one_else_the_trys_start_as_the_server_keeps_it() -> None:
    server_start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    resumed = SimpleNamespace(
        start_date=server_start + timedelta(hours=1),  # this worker's clock at the resume
        _ti_context_from_server=SimpleNamespace(start_date=server_start),
    )
    assert try_deadline_ts({"ti": resumed}, timeout_s=60) == server_start.timestamp() + 60
    assert try_deadline_ts({"ti": resumed}, timeout_s=60, carried_ts=5.0) == 5.0
    first = SimpleNamespace(start_date=server_start, _ti_context_from_server=None)
    assert try_deadline_ts({"ti": first}, timeout_s=60) == server_start.timestamp() + 60
