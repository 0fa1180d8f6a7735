"""ecs.py: one deadline per try, placement failures as ECS reports them, logs that cannot fail
a container that succeeded, exit codes as the study and the task runner mean them, and no
finished chunk run twice.

The operator runs chunk 3 of a real plan of the tiny test study (tests/workloads/studies/tiny),
built by the DAG's own `ecs_kwargs` from the deployment's settings. botocore's Stubber checks
every ECS request against the ECS service model; S3 and CloudWatch Logs are moto's (mock_aws):
the chunk records the operator looks for are the ones the task runner (wbrun) writes.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import yaml
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)
from botocore.stub import ANY, Stubber
from moto import mock_aws

from wbrun.cli import main as wbrun_main
from windows_batch import catalog, cluster, planning
from windows_batch import settings as settings_mod
from windows_batch.cluster import run_task_group
from windows_batch.dag_factory import load_study
from windows_batch.ecs import (
    TRIGGER_GRACE_S,
    AggregateEcsOperator,
    ChunkEcsOperator,
    ecs_kwargs,
    placement_failure_kind,
)
from windows_batch.objects import Objects
from windows_batch_triggers.deadline import DeadlineTaskDoneTrigger

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "tests" / "workloads" / "studies" / "tiny"
REGION = "us-east-1"
CLUSTER = "wb-cluster"
BUCKET = "wb-results"
RUN_ID = "manual__1"
FAMILY = "wb-study-tiny"
TASK_ARN = f"arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/0123456789abcdef"
ENGINE = f"s3://{BUCKET}/studies/tiny/_engine/{RUN_ID}/"
TIMEOUT_S = 600
CONF = {"Items": 8, "PerChunk": 2}
"""Four chunks of two items; the operator runs chunk 3 (items 7-8), map index 3."""
CHUNK = 3


def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # A bare connection: never a developer's own, and no lookup of a missing one.
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", '{"conn_type": "aws"}')
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@functools.cache
def client(service: str) -> Any:
    """One client per service for the test's own calls (moto's, while mock_aws is on)."""
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def ecs_settings(**extra: str) -> settings_mod.Settings:
    env = {
        "S3_BUCKET": BUCKET,
        "CLUSTER_NAME": CLUSTER,
        "REGION": REGION,
        "TASK_FAMILY_PREFIX": "wb-study-",
        "TASK_TIMEOUT_S": str(TIMEOUT_S),
        "CAPACITY_RETRY_S": "30",
        "DEFER_SETTLE_S": "10",
        "WAITER_DELAY_S": "1",
        # The first RunTask of chunk N waits N / RUN_TASK_RATE s (spread): a few ms here.
        "RUN_TASK_RATE": "1000",
        **extra,
    }
    return settings_mod.load({f"AIRFLOW__WINDOWS_BATCH__{k}": v for k, v in env.items()})


def plan_tiny(settings: settings_mod.Settings, folder: Path = TINY) -> planning.Planned:
    """plan_tasks' plan of the tiny study, its manifest written to (moto's) S3."""
    study = load_study(catalog.study_info(folder), settings)
    params = {k: v.value for k, v in study.form(settings).items()} | CONF
    return planning.plan_run(study, settings, params=params, conf=CONF, run_id=RUN_ID)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """openjd-model's verdicts on the study's template, shared by the file's tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def ref(cache_dir: Path) -> dict[str, Any]:
    """Chunk 3's reference, as plan_tasks pushes it to XCom for the mapped task."""
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        aws_env(monkeypatch)
        monkeypatch.setenv("AIRFLOW__WINDOWS_BATCH__CACHE_DIR", str(cache_dir))
        client("s3").create_bucket(Bucket=BUCKET)
        return plan_tiny(ecs_settings()).refs[CHUNK].to_json()


_HOOK_CLIENTS: dict[tuple[str, str | None, str], Any] = {}
_hook_client = cluster.aws_client


def reused_hook_client(settings: settings_mod.Settings, service: str) -> Any:
    """cluster.aws_client's client (the Airflow connection's), made once per file: each new
    one costs a boto3 session, about 0.3 s of loading the service's model."""
    key = (service, settings.region, settings.aws_conn_id)
    if key not in _HOOK_CLIENTS:
        _HOOK_CLIENTS[key] = _hook_client(settings, service)
    return _HOOK_CLIENTS[key]


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[None]:
    """moto for S3 and CloudWatch Logs, with the results bucket and nothing in it yet."""
    aws_env(monkeypatch)
    monkeypatch.setattr(cluster, "aws_client", reused_hook_client)
    monkeypatch.setenv("AIRFLOW__WINDOWS_BATCH__CACHE_DIR", str(cache_dir))
    with mock_aws():
        client("s3").create_bucket(Bucket=BUCKET)
        yield


def context(started: datetime | None = None, *, failed_tasks: int = 0) -> Any:
    """The task context (Airflow's Context, as a dict)."""
    ti = SimpleNamespace(
        dag_id="tiny",
        task_id="work",
        run_id=RUN_ID,
        map_index=CHUNK,
        start_date=started or datetime.now(UTC),
        try_number=1,
        xcom_push=lambda **_: None,
        xcom_pull=lambda **_: 4,  # plan_tasks' chunk_count
        get_ti_count=lambda **_: failed_tasks,
    )
    return {"ti": ti, "run_id": RUN_ID, "params": {}}


def operator(
    chunk: dict[str, Any] | None,
    *,
    study_dir: Path = TINY,
    aggregate: bool = False,
    **settings: str,
) -> ChunkEcsOperator:
    s = ecs_settings(**settings)
    study = load_study(catalog.study_info(study_dir), s)
    if aggregate:
        return AggregateEcsOperator(task_id="combine", **ecs_kwargs(s, study))
    return ChunkEcsOperator(
        task_id="work", chunk=chunk, budget=study.info.max_failed_tasks, **ecs_kwargs(s, study)
    )


class Recorder(Stubber):
    """A Stubber that also lists every ECS operation asked for: the operator swallows some
    errors (a call the Stubber refused among them), so "no ECS call" is checked on the list."""

    def __init__(self, ecs: Any) -> None:
        super().__init__(ecs)
        self.calls: list[str] = []
        self._record_id = f"record-{id(self)}"

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def activate(self) -> None:
        self.client.meta.events.register_first(
            "before-parameter-build.*.*", self._record, unique_id=self._record_id
        )
        super().activate()

    def deactivate(self) -> None:
        self.client.meta.events.unregister(
            "before-parameter-build.*.*", self._record, unique_id=self._record_id
        )
        super().deactivate()


def stubbed(op: ChunkEcsOperator) -> Recorder:
    """A Stubber on the file's ECS client, which the operator uses as its own (cached) one."""
    ecs = client("ecs")
    op.__dict__["client"] = ecs
    return Recorder(ecs)


@pytest.fixture
def ecs_stub(ref: dict[str, Any]) -> Iterator[tuple[ChunkEcsOperator, Recorder]]:
    op = operator(ref)
    with stubbed(op) as stubber:
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


def runner_command(chunk: dict[str, Any] | None) -> list[str]:
    """The task runner's arguments ECS must get for the chunk (docker/base/wbrun/cli.py)."""
    if chunk is None:
        return ["aggregate", "--manifest", ENGINE + "manifest/"]
    return [
        "run",
        "--manifest",
        ENGINE + "manifest/",
        "--chunk",
        str(chunk["chunk"]),
        "--at",
        chunk["at"],
        "--sha",
        chunk["sha"],
    ]


def expect_run_task(
    stubber: Stubber, response: dict[str, Any], chunk: dict[str, Any] | None
) -> None:
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
            "taskDefinition": FAMILY,
            "overrides": {
                "containerOverrides": [{"name": "task", "command": runner_command(chunk)}]
            },
            "startedBy": ANY,
            "launchType": "EC2",
            "group": run_task_group("tiny", RUN_ID),
        },
    )


def started_task(arn: str = TASK_ARN) -> dict[str, Any]:
    return {"tasks": [{"taskArn": arn, "containers": [{"name": "task"}]}], "failures": []}


# ---- placement ------------------------------------------------------------------------------


# ECS's RunTask failures (Amazon ECS Developer Guide, "Amazon ECS API failure reasons",
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/api_failures_messages.html):
# RESOURCE:* = the CPU, memory or ports asked for are not free on the instances now; AGENT = the
# instance's agent is disconnected; ATTRIBUTE = no instance has an attribute a constraint needs;
# MISSING = the cluster or instance does not exist. Only the first two can pass with waiting.
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


def test_the_container_runs_the_task_runner_for_its_chunk_under_the_run_s_group(
    ecs_stub: tuple[ChunkEcsOperator, Recorder], ref: dict[str, Any]
) -> None:
    """RunTask gets the study's task definition, the run's group and, as the container's
    command, the runner's arguments for this chunk of the run's manifest (expect_run_task)."""
    op, stubber = ecs_stub
    expect_run_task(stubber, started_task(), ref)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    assert deferred.value.method_name == "execute_complete"


def test_a_placement_failure_that_is_not_about_room_fails_at_once_with_ecs_reason(
    ecs_stub: tuple[ChunkEcsOperator, Recorder], ref: dict[str, Any]
) -> None:
    op, stubber = ecs_stub
    failures = [{"arn": "arn:ci/1", "reason": "ATTRIBUTE", "detail": "ecs.os-type"}]
    expect_run_task(stubber, {"tasks": [], "failures": failures}, ref)
    with pytest.raises(AirflowFailException, match=r"cannot place .*ATTRIBUTE \(ecs.os-type\)"):
        op.execute(context())


def test_no_room_waits_within_the_deadline_and_carries_it(
    ecs_stub: tuple[ChunkEcsOperator, Recorder], ref: dict[str, Any]
) -> None:
    op, stubber = ecs_stub
    started = datetime.now(UTC) - timedelta(seconds=TIMEOUT_S - 5)  # 5 s left
    expect_run_task(stubber, {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY"}]}, ref)
    expect_registered(stubber, (4096, 5734))  # the task fits an instance: room may come
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(started))
    deadline = started.timestamp() + TIMEOUT_S
    assert isinstance(deferred.value.trigger, TimeDeltaTrigger)
    assert deferred.value.method_name == "run_task_again"
    assert deferred.value.kwargs == {
        "deadline_ts": pytest.approx(deadline),
        "waiting_for": "RESOURCE:MEMORY",
    }
    # Not CAPACITY_RETRY_S (30 s): the wait ends by the deadline.
    assert deferred.value.trigger.moment <= datetime.fromtimestamp(deadline + 1, UTC)
    assert deferred.value.timeout is not None
    assert deferred.value.timeout.total_seconds() <= 5 + TRIGGER_GRACE_S + 1


def test_a_capacity_wait_is_never_shorter_than_the_settle_time(ref: dict[str, Any]) -> None:
    """CAPACITY_RETRY_S below DEFER_SETTLE_S: the wait lasts the settle time."""
    op = operator(ref, CAPACITY_RETRY_S="1", DEFER_SETTLE_S="7")
    with stubbed(op) as stubber:
        expect_run_task(stubber, {"tasks": [], "failures": [{"reason": "AGENT"}]}, ref)
        before = datetime.now(UTC)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context())
        stubber.assert_no_pending_responses()
    trigger = deferred.value.trigger
    assert isinstance(trigger, TimeDeltaTrigger)
    assert trigger.moment >= before + timedelta(seconds=7)


def test_no_container_instance_registered_yet_is_a_wait(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
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


def test_another_invalid_parameter_is_an_error_not_a_wait(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
) -> None:
    op, stubber = ecs_stub
    stubber.add_response("list_tasks", {"taskArns": []})
    stubber.add_client_error(
        "run_task",
        service_error_code="InvalidParameterException",
        service_message="TaskDefinition not found.",
        http_status_code=400,
    )
    with pytest.raises(Exception, match="TaskDefinition not found"):
        op.execute(context())


def big_study(tmp_path: Path, *, cpu: int, memory_mib: int) -> Path:
    """The tiny study with study.yaml asking for `cpu` units and `memory_mib` per task."""
    folder = tmp_path / "studies" / "tiny"
    shutil.copytree(TINY, folder)
    (folder / "study.yaml").write_text(yaml.safe_dump({"cpu": cpu, "memory_mib": memory_mib}))
    return folder


def expect_registered(stubber: Stubber, *sizes: tuple[int, int]) -> None:
    """The cluster's ACTIVE container instances and what each registered (CPU, MiB)."""
    arns = [
        f"arn:aws:ecs:{REGION}:123456789012:container-instance/{CLUSTER}/{i}"
        for i in range(len(sizes))
    ]
    stubber.add_response(
        "list_container_instances",
        {"containerInstanceArns": arns},
        {"cluster": CLUSTER, "status": "ACTIVE"},
    )
    stubber.add_response(
        "describe_container_instances",
        {
            "containerInstances": [
                {
                    "containerInstanceArn": arn,
                    "ec2InstanceId": f"i-{index:017x}",
                    "agentConnected": True,
                    "registeredResources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
                    ],
                }
                for index, (arn, (cpu, memory)) in enumerate(zip(arns, sizes, strict=True))
            ]
        },
        {"cluster": CLUSTER, "containerInstances": arns},
    )


def test_a_task_larger_than_every_registered_instance_fails_at_once_naming_both_sizes(
    tmp_path: Path, ref: dict[str, Any]
) -> None:
    """Issue 17 point 13: RESOURCE:MEMORY on a cluster whose instances are all smaller than the
    task is no wait: it would last the whole deadline. The try fails without retries. The
    task's size is the study's (study.yaml cpu and memory_mib)."""
    op = operator(ref, study_dir=big_study(tmp_path, cpu=2048, memory_mib=8000))
    with stubbed(op) as stubber:
        expect_run_task(stubber, {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY"}]}, ref)
        expect_registered(stubber, (4096, 5734), (4096, 5734))
        with pytest.raises(AirflowFailException) as failed:
            op.execute(context())
        stubber.assert_no_pending_responses()
    message = str(failed.value)
    assert "(RESOURCE:MEMORY)" in message
    assert "needs 2048 CPU units and 8000 MiB" in message
    assert "2 registered container instances" in message
    assert "4096 CPU units and 5734 MiB" in message


def test_a_task_that_fits_a_registered_instance_waits_for_room(
    tmp_path: Path, ref: dict[str, Any]
) -> None:
    op = operator(ref, study_dir=big_study(tmp_path, cpu=2048, memory_mib=8000))
    with stubbed(op) as stubber:
        expect_run_task(stubber, {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY"}]}, ref)
        expect_registered(stubber, (4096, 5734), (4096, 13516))
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context())
        stubber.assert_no_pending_responses()
    assert deferred.value.method_name == "run_task_again"


def test_the_instances_are_compared_once_per_try_not_at_every_wait(
    tmp_path: Path, ref: dict[str, Any]
) -> None:
    """A later wait of the same try (waiting_for carried) asks RunTask only: with many tasks
    waiting for a full cluster, the describe calls would add up."""
    op = operator(ref, study_dir=big_study(tmp_path, cpu=2048, memory_mib=8000))
    with stubbed(op) as stubber:
        expect_run_task(stubber, {"tasks": [], "failures": [{"reason": "RESOURCE:CPU"}]}, ref)
        with pytest.raises(TaskDeferred):
            op.run_task_again(context(), deadline_ts=time.time() + 60, waiting_for="RESOURCE:CPU")
        stubber.assert_no_pending_responses()
    assert stubber.calls == ["ListTasks", "RunTask"]


def test_the_capacity_wait_ends_at_the_deadline_carried_through_deferrals(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
) -> None:
    """Resumed after its last wait, with the deadline from next_kwargs: it fails, no RunTask,
    and without a retry: a retry would reach it again."""
    op, stubber = ecs_stub
    carried = time.time() - 1
    # A fresh start date would give a full TASK_TIMEOUT_S again; the carried deadline wins.
    with pytest.raises(
        AirflowFailException, match=r"no room .*\(RESOURCE:CPU\).*deadline \(TASK_TIMEOUT_S=600 s"
    ):
        op.run_task_again(
            context(datetime.now(UTC)), event=None, deadline_ts=carried, waiting_for="RESOURCE:CPU"
        )
    assert stubber.calls == []


# ---- the container's wait and its deadline --------------------------------------------------


def test_the_container_wait_is_bounded_by_the_same_deadline(
    ecs_stub: tuple[ChunkEcsOperator, Recorder], ref: dict[str, Any]
) -> None:
    op, stubber = ecs_stub
    started = datetime.now(UTC) - timedelta(seconds=100)
    expect_run_task(stubber, started_task(), ref)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(started))
    trigger = deferred.value.trigger
    assert isinstance(trigger, DeadlineTaskDoneTrigger)
    deadline = started.timestamp() + TIMEOUT_S
    assert trigger.deadline_ts == pytest.approx(deadline)
    assert "TASK_TIMEOUT_S=600 s" in trigger.stop_reason
    assert deferred.value.kwargs == {"deadline_ts": pytest.approx(deadline)}
    # Airflow's own trigger timeout: only a little past the deadline (not 70 days).
    assert deferred.value.timeout is not None
    assert deferred.value.timeout.total_seconds() == pytest.approx(
        TIMEOUT_S - 100 + TRIGGER_GRACE_S, abs=5
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "windows_batch_triggers.deadline.DeadlineTaskDoneTrigger"
    assert kwargs["deadline_ts"] == trigger.deadline_ts
    # The first check waits DEFER_SETTLE_S (Airflow 3.3.1's stale-report race, deadline.py).
    assert kwargs["settle_s"] == op.defer_settle_s == 10


def test_at_the_deadline_the_task_is_stopped_with_a_reason_naming_it(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
) -> None:
    """The trigger could not stop it: the resumed try stops it, then fails without a retry
    (the engine's rule since the studies split: a retry would only reach it again)."""
    op, stubber = ecs_stub
    deadline = time.time() - 2
    stubber.add_response("list_tasks", {"taskArns": [TASK_ARN]})
    stubber.add_response(
        "stop_task",
        {"task": {"taskArn": TASK_ARN}},
        {"cluster": CLUSTER, "task": TASK_ARN, "reason": Containing("TASK_TIMEOUT_S=600 s")},
    )
    event = {"status": "deadline", "task_arn": TASK_ARN, "cluster": CLUSTER, "stopped": False}
    with pytest.raises(AirflowFailException, match="reached its deadline"):
        op.execute_complete(context(), event=event, deadline_ts=deadline)


def test_a_deadline_the_trigger_already_stopped_is_not_stopped_again(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
) -> None:
    op, stubber = ecs_stub
    event = {"status": "deadline", "task_arn": TASK_ARN, "cluster": CLUSTER, "stopped": True}
    with pytest.raises(AirflowFailException, match=f"ECS task {TASK_ARN} stopped"):
        op.execute_complete(context(), event=event, deadline_ts=time.time() - 2)
    assert stubber.calls == []


def test_a_timed_out_trigger_stops_the_tasks_of_this_try(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
) -> None:
    """Airflow's trigger timeout (triggerer gone): resume_execution('__fail__') stops it."""
    op, stubber = ecs_stub
    started = datetime.now(UTC) - timedelta(seconds=TIMEOUT_S + 60)
    stubber.add_response(
        "list_tasks",
        {"taskArns": [TASK_ARN]},
        {"cluster": CLUSTER, "desiredStatus": "RUNNING", "startedBy": ANY},
    )
    stubber.add_response(
        "stop_task",
        {"task": {"taskArn": TASK_ARN}},
        {"cluster": CLUSTER, "task": TASK_ARN, "reason": Containing("deadline TASK_TIMEOUT_S")},
    )
    with pytest.raises(Exception, match="Trigger") as failed:
        op.resume_execution("__fail__", {"error": "Trigger timeout"}, context(started))
    assert type(failed.value).__name__ == "TaskDeferralTimeout"


def test_a_trigger_that_failed_before_the_deadline_leaves_the_container_to_the_retry(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
) -> None:
    """No ECS call: the retry reattaches to the running task."""
    op, stubber = ecs_stub
    with pytest.raises(Exception, match="Trigger failure") as failed:
        op.resume_execution("__fail__", {"error": "Trigger failure"}, context())
    assert type(failed.value).__name__ == "TaskDeferralError"
    assert stubber.calls == []


def test_a_triggerer_that_cannot_import_our_trigger_waits_on_the_worker_until_the_deadline(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
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
    with pytest.raises(AirflowFailException, match="reached its deadline"):
        op.resume_execution("__fail__", failed, context(started))


# ---- the container's outcome ----------------------------------------------------------------


def describe(exit_code: int, **task: str) -> dict[str, Any]:
    container = {"name": "task", "lastStatus": "STOPPED", "exitCode": exit_code}
    return {
        "tasks": [{"taskArn": TASK_ARN, "lastStatus": "STOPPED", "containers": [container], **task}]
    }


SUCCESS = {"status": "success", "task_arn": TASK_ARN, "cluster": CLUSTER}


def test_a_log_fetch_error_after_exit_0_is_a_success_and_the_last_line_is_returned(
    ref: dict[str, Any],
) -> None:
    op = operator(ref, LOG_GROUP="/ecs/wb/tasks")
    with stubbed(op) as stubber:
        # CloudWatch has no such log group/stream: GetLogEvents raises ResourceNotFoundException.
        for _ in range(2):  # is the host gone? then the exit code
            stubber.add_response("describe_tasks", describe(0))
        assert op.execute_complete(context(), event=SUCCESS, deadline_ts=time.time() + 60) is None
        # With the container's stream (ECS names it <study>/<container>/<task id>), its last line.
        logs = client("logs")
        logs.create_log_group(logGroupName="/ecs/wb/tasks")
        stream = f"tiny/task/{TASK_ARN.rsplit('/', 1)[1]}"
        logs.create_log_stream(logGroupName="/ecs/wb/tasks", logStreamName=stream)
        logs.put_log_events(
            logGroupName="/ecs/wb/tasks",
            logStreamName=stream,
            logEvents=[
                {"timestamp": int(time.time() * 1000), "message": "item 8 done"},
                {"timestamp": int(time.time() * 1000) + 1, "message": "wbrun: chunk-00003 done"},
            ],
        )
        for _ in range(2):
            stubber.add_response("describe_tasks", describe(0))
        last = op.execute_complete(context(), event=SUCCESS, deadline_ts=time.time() + 60)
        assert last == "wbrun: chunk-00003 done"
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "final", "meaning"),
    [
        pytest.param(3, True, "final: the study says a retry would not help", id="study-final"),
        pytest.param(1, False, "may pass on a retry", id="other"),
        pytest.param(64, True, "the task runner refused its manifest", id="runner-usage"),
        pytest.param(65, True, "the chunk is not the one plan_tasks planned", id="runner-data"),
        pytest.param(74, False, "the task runner could not read or write", id="runner-storage"),
        pytest.param(124, False, "the command outran its timeout", id="item-timeout"),
        pytest.param(127, False, "the command was not found", id="command-not-found"),
    ],
)
def test_an_exit_code_fails_the_try_as_the_study_and_the_runner_mean_it(
    code: int, final: bool, meaning: str, ecs_stub: tuple[ChunkEcsOperator, Recorder]
) -> None:
    """study.yaml's final_exit_codes (the tiny study's: [3]) and the task runner's own 64 and
    65 fail without retries; any other non-zero exit may pass on a retry."""
    op, stubber = ecs_stub
    for _ in range(3):  # is the host gone? the provider's check; the exit code
        stubber.add_response("describe_tasks", describe(code))
    with pytest.raises(AirflowException, match=rf"exited with {code} \({meaning}") as failed:
        op.execute_complete(context(), event=SUCCESS, deadline_ts=time.time() + 60)
    assert isinstance(failed.value, AirflowFailException) == final


@pytest.mark.parametrize(
    "stopped",
    [
        # ECS's stoppedReason when the instance went away (the provider cites "Stopped tasks
        # error codes", https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
        # stopped-task-errors.html); a Spot reclaim has the stop code SpotInterruption.
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
    stopped: dict[str, str], ecs_stub: tuple[ChunkEcsOperator, Recorder], ref: dict[str, Any]
) -> None:
    op, stubber = ecs_stub
    stubber.add_response("describe_tasks", describe(137, **stopped))
    replacement = TASK_ARN.replace("0123", "4567")
    expect_run_task(stubber, started_task(replacement), ref)
    deadline = time.time() + 300
    # Not a failure (no retry used): a new container, awaited until the same deadline.
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete(context(), event=SUCCESS, deadline_ts=deadline)
    assert isinstance(deferred.value.trigger, DeadlineTaskDoneTrigger)
    assert deferred.value.trigger.task_arn == replacement
    assert deferred.value.trigger.deadline_ts == deadline


# ---- no finished chunk runs twice -----------------------------------------------------------


def run_chunk_with_wbrun(planned: planning.Planned) -> str:
    """Run chunk 3 with the real task runner, in-process against moto's S3: its record's URI."""
    chunk = planned.refs[CHUNK]
    code = wbrun_main(
        [
            "run",
            "--manifest",
            planned.context.engine_uri + "manifest/",
            "--chunk",
            str(chunk.chunk),
            "--at",
            f"{chunk.offset}:{chunk.length}",
            "--sha",
            chunk.sha,
        ]
    )
    assert code == 0
    return f"{ENGINE}chunks/done/{CHUNK:05d}-2.json"


@pytest.fixture
def finished(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """The tiny run planned and its chunk 3 run by the task runner: (its reference, record)."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the runner's work folder
    planned = plan_tiny(ecs_settings())
    return planned.refs[CHUNK].to_json(), run_chunk_with_wbrun(planned)


def test_a_chunk_the_runner_recorded_as_done_is_reported_not_run_again(
    finished: tuple[dict[str, Any], str],
) -> None:
    chunk, record = finished
    op = operator(chunk)
    with stubbed(op) as stubber:
        summary = op.execute(context())
    assert summary == f"chunk {CHUNK} already done (2 work items): {record}"
    assert stubber.calls == []  # no container started


def change_record(uri: str, body: bytes | None) -> None:
    s3 = client("s3")
    key = uri.removeprefix(f"s3://{BUCKET}/")
    if body is None:
        s3.delete_object(Bucket=BUCKET, Key=key)
    else:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="absent"),
        pytest.param(b"{not json", id="broken"),
        pytest.param(b'["a list"]', id="not-an-object"),
        pytest.param("other-digest", id="other-digest"),
    ],
)
def test_a_missing_broken_or_foreign_record_runs_the_chunk(
    body: bytes | str | None, finished: tuple[dict[str, Any], str]
) -> None:
    """A record of other work (another digest: a chunk of another plan under this name) or
    one that cannot be read counts for nothing: the chunk runs; the runner skips its items
    whose own records match, so this is only slower, never wrong."""
    chunk, record = finished
    if body == "other-digest":
        data = json.loads(Objects(ecs_settings()).read(record) or b"")
        body = json.dumps({**data, "sha": "0" * 64}).encode()
    assert not isinstance(body, str)
    change_record(record, body)
    op = operator(chunk)
    with stubbed(op) as stubber:
        expect_run_task(stubber, started_task(), chunk)
        with pytest.raises(TaskDeferred):
            op.execute(context())
        stubber.assert_no_pending_responses()


def test_the_aggregate_runs_again_whatever_it_recorded(
    finished: tuple[dict[str, Any], str],
) -> None:
    """It reads what exists now: a retry after more chunks finished must see them."""
    change_record(f"{ENGINE}chunks/done/aggregate.json", b'{"status": "done"}')
    op = operator(None, aggregate=True)
    with stubbed(op) as stubber:
        expect_run_task(stubber, started_task(), None)
        with pytest.raises(TaskDeferred):
            op.execute(context())
        stubber.assert_no_pending_responses()


def test_a_spent_failure_budget_skips_the_chunk_before_any_ecs_call(
    ecs_stub: tuple[ChunkEcsOperator, Recorder],
) -> None:
    """The run's form allows 1 failed task of 4; 2 failed: this chunk is not started."""
    op, stubber = ecs_stub
    ctx = context(failed_tasks=2)
    ctx["params"] = {"max_failed_tasks": "1"}
    with pytest.raises(AirflowSkipException, match="failure budget is spent: 2 work tasks"):
        op.execute(ctx)
    assert stubber.calls == []
