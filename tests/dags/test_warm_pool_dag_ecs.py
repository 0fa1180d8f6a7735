"""A study on a cluster started from the warm pool, end to end: dag.test() against the moto ECS
server (tests/dags/test_ecs_end_to_end.py has the harness's use; the server emulates
the warm pool lifecycle of the Auto Scaling user guide, "Use lifecycle hooks with a warm pool
in Auto Scaling group", tests/cloudformation/moto_server.py).

What the DAG does with the pool: plan_tasks estimates the start from stopped, scale_out says how
many instances came from the pool, scale_in prices the pool's refill and EBS and gives the time
from the trigger to the first task; every AWS call is one the execution role allows.
"""

from __future__ import annotations

import re

import pytest

from .conftest import STUDY, RunDag
from .test_ecs_end_to_end import Deploy, check_iam, dag_env

pytestmark = pytest.mark.airflow


def test_a_study_starts_its_cluster_from_the_pool_and_reports_the_first_task(
    airflow_env: dict[str, str], run_dag: RunDag, ecs_deployment: Deploy
) -> None:
    deployment = ecs_deployment(ecs_parameters={"WarmPoolSize": "2"})
    group = deployment.outputs["ecs"]["AutoScalingGroupName"]
    autoscaling = deployment.client("autoscaling")
    for _ in range(5):  # each DescribeWarmPool is one step of the emulated lifecycle
        pool = autoscaling.describe_warm_pool(AutoScalingGroupName=group)["Instances"]
    assert [i["LifecycleState"] for i in pool] == ["Warmed:Stopped"] * 2
    pooled = {i["InstanceId"] for i in pool}

    outcome = run_dag(dag_env(airflow_env, deployment), STUDY)  # 2 instances of the tiny study
    assert outcome["state"] == "success", outcome["log"][-5000:]
    log = outcome["log"]
    assert "warm pool: 2 of 2 start from stopped; refill 2 x " in log  # plan_tasks' estimate
    assert "warm pool: 2 of 2 instances started from it, 0 launched cold" in log  # scale_out
    usage = [line for line in log.splitlines() if "cluster: " in line][-1]
    assert "warm pool: 2 of 2 started from stopped; refill (estimated) 2 x " in usage
    assert "2 launched into the pool since the run began" in usage
    # The line as logged, and as pushed for the note (the runner prints the XComs as JSON).
    (first,) = {m.group(0).strip() for m in re.finditer(r'first task: [^\n\["]*', log)}
    assert "after the trigger (queued " in first
    assert ", start from stopped " in first
    assert first.rstrip().endswith("instances: 2 warm")

    # The pool refilled with new instances after scale-in; the used ones are gone.
    refill = autoscaling.describe_warm_pool(AutoScalingGroupName=group)["Instances"]
    assert len(refill) == 2
    assert not {i["InstanceId"] for i in refill} & pooled
    # The execution role allowed every call, the pool's included.
    assert "autoscaling:DescribeWarmPool" in check_iam(deployment)["mwaa"]
