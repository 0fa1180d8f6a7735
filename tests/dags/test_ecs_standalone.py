"""The ECS backend under the real scheduler: what dag.test() cannot show.

dag.test() runs one task at a time and runs triggers inline (a failed trigger fails the task
without its retries), so the concurrency cap with deferred tasks and a retry that reattaches are
tested here, against `airflow standalone` (LocalExecutor, scheduler, triggerer) on the moto ECS
deployment (fixture `ecs_airflow` in conftest.py). Containers are paused (`docker pause`'s
SIGSTOP) where a test needs one to stay RUNNING: a slow container, at no CPU cost.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .conftest import STANDALONE_MAX_PARALLEL_TASKS, EcsAirflow

pytestmark = pytest.mark.airflow

# Long enough for the scheduler to start more simulations if the cap let it (it loops every
# second or so), short enough to keep the suite quick.
HOLD_S = 6.0


def study(**fields: Any) -> dict[str, Any]:
    return {
        "num_tasks": 1,
        "ebn0_db": [4],
        "max_bits_per_task": 100_000,
        "target_errors": 100,
        "cluster_size": 1,
        "scale_out_timeout_s": 120,
        "scale_in_timeout_s": 120,
        **fields,
    }


def test_deferred_simulations_count_toward_the_concurrency_cap(ecs_airflow: EcsAirflow) -> None:
    deployment = ecs_airflow.deployment
    # 3 simulations, room for 4 on the one instance: only the cap can hold one back.
    run_id = ecs_airflow.trigger(study(num_tasks=3, ebn0_db=[0, 4]))
    paused: dict[str, dict[str, Any]] = {}

    def pause_new_simulations() -> bool:
        # Paused as soon as they appear: a container must not finish before the check.
        for container in deployment.containers(run_id):
            if container["command"][0] == "simulate" and container["task_arn"] not in paused:
                deployment.pause(container)
                paused[container["task_arn"]] = container
        return len(paused) >= STANDALONE_MAX_PARALLEL_TASKS

    deployment.wait_for("two simulation containers", pause_new_simulations, timeout_s=150)
    try:
        # Both Airflow tasks wait in the triggerer (deferred); the third stays scheduled.
        def states() -> list[str] | None:
            tis = ecs_airflow.task_instances(run_id)
            found = sorted(ti["state"] for key, ti in tis.items() if key.startswith("simulate["))
            return found if found.count("deferred") == 2 else None

        deployment.wait_for("two deferred simulations", states, timeout_s=60)
        time.sleep(HOLD_S)  # deliberate: the scheduler gets several loops to break the cap
        pause_new_simulations()
        tis = ecs_airflow.task_instances(run_id)
        held = sorted(ti["state"] for key, ti in tis.items() if key.startswith("simulate["))
        assert held == ["deferred", "deferred", "scheduled"], held
        assert len(deployment.containers(run_id)) == STANDALONE_MAX_PARALLEL_TASKS
    finally:
        for container in paused.values():
            deployment.resume(container)
    run = ecs_airflow.wait_for_run(run_id)
    assert run["state"] == "success", ecs_airflow.report(run_id)
    started = deployment.containers(run_id)
    simulations = [c for c in started if c["command"][0] == "simulate"]
    assert len(simulations) == 3
    # Never more than two simulation containers at once, over the whole run.
    spans = []
    for container in simulations:
        exited = deployment.exited(container["task_arn"])
        assert exited is not None
        assert exited["exit_code"] == 0
        spans.append((container["t"], exited["t"]))
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == STANDALONE_MAX_PARALLEL_TASKS
    # The run note, set through the REST API, leads to the plot and carries the summary.
    assert "results.png" in run["note"]
    assert "2 Eb/N0 points" in run["note"]


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
        "the simulation container",
        lambda: next(
            (c for c in deployment.containers(run_id) if c["command"][0] == "simulate"), None
        ),
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
                    ecs_airflow.task_instances(run_id)["simulate[0]"]["state"] == "up_for_retry"
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
                (ti := ecs_airflow.task_instances(run_id)["simulate[0]"])["try_number"] == 2
                and ti["state"] == "deferred"
            ),
            timeout_s=90,
        )
        assert deployment.exited(container["task_arn"]) is None  # still RUNNING meanwhile
    finally:
        deployment.resume(container)
    run = ecs_airflow.wait_for_run(run_id)
    assert run["state"] == "success", ecs_airflow.report(run_id)
    simulate = ecs_airflow.task_instances(run_id)["simulate[0]"]
    assert simulate["try_number"] == 2
    runs = [
        e
        for e in deployment.events("run_task")
        if e["placed"] and e["command"][0] == "simulate" and any(run_id in a for a in e["command"])
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
