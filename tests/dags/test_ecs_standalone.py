"""The ECS backend under the real scheduler: what dag.test() cannot show.

dag.test() runs one task at a time and runs triggers inline (a failed trigger fails the task
without its retries), so the concurrency cap with deferred tasks, a retry that reattaches and
two studies' runs sharing the cluster are tested here, against `airflow standalone`
(LocalExecutor, scheduler, triggerer) on the moto ECS deployment (fixture `ecs_airflow` in
conftest.py) with the engine's test workloads. Containers are paused (`docker pause`'s SIGSTOP)
where a test needs one to stay RUNNING: a slow container, at no CPU cost.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .conftest import STANDALONE_MAX_PARALLEL_TASKS, STUDY, EcsAirflow
from .ecs_harness import REPO

pytestmark = pytest.mark.airflow

# Long enough for the scheduler to start more chunks if the cap let it (it loops every second
# or so), short enough to keep the suite quick.
HOLD_S = 6.0
SWEEP = "work"


def study(**fields: Any) -> dict[str, Any]:
    return {**STUDY, "Items": 1, "PerChunk": 1, "cluster_size": 1, **fields}


def chunk_containers(ecs_airflow: EcsAirflow, run_id: str) -> list[dict[str, Any]]:
    """The run's containers that run a chunk (not the combine step)."""
    return [c for c in ecs_airflow.deployment.containers(run_id) if c["command"][0] == "run"]


def test_deferred_chunks_count_toward_the_concurrency_cap(ecs_airflow: EcsAirflow) -> None:
    deployment = ecs_airflow.deployment
    # 3 chunks, room for 4 on the one instance: only the cap can hold one back.
    run_id = ecs_airflow.trigger(study(Items=3))
    paused: dict[str, dict[str, Any]] = {}

    def pause_new_chunks() -> bool:
        # Paused as soon as they appear: a container must not finish before the check.
        for container in chunk_containers(ecs_airflow, run_id):
            if container["task_arn"] not in paused:
                deployment.pause(container)
                paused[container["task_arn"]] = container
        return len(paused) >= STANDALONE_MAX_PARALLEL_TASKS

    deployment.wait_for("two chunk containers", pause_new_chunks, timeout_s=150)
    try:
        # Both Airflow tasks wait in the triggerer (deferred); the third stays scheduled.
        def states() -> list[str] | None:
            tis = ecs_airflow.task_instances(run_id)
            found = sorted(ti["state"] for key, ti in tis.items() if key.startswith(f"{SWEEP}["))
            return found if found.count("deferred") == 2 else None

        deployment.wait_for("two deferred chunks", states, timeout_s=60)
        time.sleep(HOLD_S)  # deliberate: the scheduler gets several loops to break the cap
        pause_new_chunks()
        tis = ecs_airflow.task_instances(run_id)
        held = sorted(ti["state"] for key, ti in tis.items() if key.startswith(f"{SWEEP}["))
        assert held == ["deferred", "deferred", "scheduled"], held
        assert len(deployment.containers(run_id)) == STANDALONE_MAX_PARALLEL_TASKS
    finally:
        for container in paused.values():
            deployment.resume(container)
    run = ecs_airflow.wait_for_run(run_id)
    assert run["state"] == "success", ecs_airflow.report(run_id)
    chunks = chunk_containers(ecs_airflow, run_id)
    assert len(chunks) == 3
    # Never more than two chunk containers at once, over the whole run.
    spans = []
    for container in chunks:
        exited = deployment.exited(container["task_arn"])
        assert exited is not None
        assert exited["exit_code"] == 0
        spans.append((container["t"], exited["t"]))
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == STANDALONE_MAX_PARALLEL_TASKS
    # The run note, set through the REST API: the outputs, the study's summary, the progress
    # and the verdict.
    assert "3 items combined" in run["note"]
    assert "3 of 3 work items done, 0 failed, 0 pending" in run["note"]
    assert "every task succeeded and the cluster was released" in run["note"]


def test_a_retry_while_the_container_runs_reattaches_to_it(ecs_airflow: EcsAirflow) -> None:
    """The first try's trigger fails (DescribeTasks denied for a moment); the retry finds the
    RUNNING task by startedBy and waits for it: one ECS task, two Airflow tries."""
    deployment = ecs_airflow.deployment
    iam = deployment.client("iam")
    role = deployment.role_name("mwaa", "ExecutionRoleArn")
    policy = deployment.role_policy(role, "windows-batch-dag")
    narrowed = {
        **policy,
        "Statement": [
            {**s, "Action": ["ecs:StopTask"]} if s.get("Sid") == "WatchAndStopOurTasks" else s
            for s in policy["Statement"]
        ],
    }
    run_id = ecs_airflow.trigger(study())
    container = deployment.wait_for(
        "the chunk's container",
        lambda: next(iter(chunk_containers(ecs_airflow, run_id)), None),
        timeout_s=150,
    )
    deployment.pause(container)
    try:
        iam.put_role_policy(
            RoleName=role, PolicyName="windows-batch-dag", PolicyDocument=json.dumps(narrowed)
        )
        try:
            deployment.wait_for(
                "the first try to fail",
                lambda: (
                    ecs_airflow.task_instances(run_id)[f"{SWEEP}[0]"]["state"] == "up_for_retry"
                ),
                timeout_s=90,
            )
        finally:
            iam.put_role_policy(
                RoleName=role, PolicyName="windows-batch-dag", PolicyDocument=json.dumps(policy)
            )
        deployment.wait_for(
            "the retry to wait on the same task",
            lambda: (
                (ti := ecs_airflow.task_instances(run_id)[f"{SWEEP}[0]"])["try_number"] == 2
                and ti["state"] == "deferred"
            ),
            timeout_s=90,
        )
        assert deployment.exited(container["task_arn"]) is None  # still RUNNING meanwhile
    finally:
        deployment.resume(container)
    run = ecs_airflow.wait_for_run(run_id)
    assert run["state"] == "success", ecs_airflow.report(run_id)
    assert ecs_airflow.task_instances(run_id)[f"{SWEEP}[0]"]["try_number"] == 2
    runs = [
        e
        for e in deployment.events("run_task")
        if e["placed"] and e["command"][0] == "run" and any(run_id in a for a in e["command"])
    ]
    assert len(runs) == 1, runs
    denied = [
        d
        for d in deployment.iam_decisions()
        if d["action"] == "ecs:DescribeTasks" and d["decision"] != "Allow"
    ]
    assert denied, "the trigger's DescribeTasks was never denied"
    exited = deployment.exited(container["task_arn"])
    assert exited is not None
    assert exited["exit_code"] == 0


def task_log(ecs_airflow: EcsAirflow, dag_id: str, run_id: str, task_id: str) -> str:
    """The Airflow log of a task of a run (every try)."""
    logs = (
        ecs_airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    )
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.rglob("*.log")))


def test_two_studies_share_the_cluster_and_the_last_run_out_scales_in(
    ecs_airflow: EcsAirflow,
) -> None:
    """cluster.py's rule: scale_in of the `perfile` run leaves the group up while the `tiny`
    run (another study) is active; the tiny run, the last one out, scales it in to 0."""
    deployment = ecs_airflow.deployment
    since = time.time()
    tiny = ecs_airflow.trigger(study(Items=2, cluster_size=2))
    paused: dict[str, dict[str, Any]] = {}

    def pause_tiny() -> bool:
        for container in chunk_containers(ecs_airflow, tiny):
            if container["task_arn"] not in paused:
                deployment.pause(container)
                paused[container["task_arn"]] = container
        return len(paused) == 2

    try:
        deployment.wait_for("the tiny run's two chunks", pause_tiny, timeout_s=150)
        perfile = ecs_airflow.trigger({"cluster_size": 1}, dag_id="perfile")
        run = ecs_airflow.wait_for_run(perfile, dag_id="perfile")
        assert run["state"] == "success", ecs_airflow.report(perfile, dag_id="perfile")
        # The perfile run is over and the tiny run still holds its (paused) containers: the
        # group was never lowered, and is still up.
        desired = [e["value"] for e in deployment.events("set_desired_capacity") if e["t"] > since]
        assert 0 not in desired, desired
        assert min(desired[desired.index(2) :]) == 2, desired
        group = deployment.client("autoscaling").describe_auto_scaling_groups()[
            "AutoScalingGroups"
        ][0]
        assert group["DesiredCapacity"] == 2
        assert len(group["Instances"]) >= 2
        assert "Leaving the cluster as it is: the active run(s) of tiny use it" in task_log(
            ecs_airflow, "perfile", perfile, "scale_in"
        )
        assert all(deployment.exited(arn) is None for arn in paused)
    finally:
        for container in paused.values():
            deployment.resume(container)
    run = ecs_airflow.wait_for_run(tiny)
    assert run["state"] == "success", ecs_airflow.report(tiny)
    desired = [e["value"] for e in deployment.events("set_desired_capacity") if e["t"] > since]
    assert desired[-1] == 0
    group = deployment.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 0
    assert group["Instances"] == []
    assert "Leaving the cluster" not in task_log(ecs_airflow, "tiny", tiny, "scale_in")

    # The perfile run's inputs (files of its bundle) came from the run's staged copy in S3,
    # not from this machine's folder, which a container on AWS cannot see.
    outputs = f"studies/perfile/runs/{perfile}/Out/"
    assert sorted(k.removeprefix(outputs) for k in deployment.keys(outputs)) == [
        "s1.txt.upper",
        "s2.txt.upper",
        "s3.txt.upper",
    ]
    assert deployment.read(outputs + "s2.txt.upper") == b"SAMPLE NUMBER 2\n"
    staged = f"studies/perfile/_engine/{perfile}/bundle/samples/"
    assert "s1.txt" in [k.removeprefix(staged) for k in deployment.keys(staged)]
    commands = [
        line
        for c in deployment.containers(perfile)
        for line in deployment.container_log(c["task_arn"], "perfile")
        if "wbrun: item " in line and "python" in line
    ]
    assert len(commands) == 3, commands
    assert not [line for line in commands if str(REPO) in line], commands
