"""The ECS stack's safety net: an idle cluster goes back to 0 instances even if Airflow is gone.

AWS's rules the template is held to:
- ECS sends CPUReservation (AWS/ECS, dimension ClusterName) once a minute, and only for a
  cluster with tasks in the RUNNING state: an idle cluster has no data point at all ("Amazon ECS
  CloudWatch metrics", developer guide). So the alarm fills a missing point with 0.
- An alarm whose action is an Auto Scaling policy invokes it again every minute it stays in
  ALARM (CloudWatch "Alarm actions"). So the alarm must be OK whenever the group has no
  instance in service, or it would undo the next scale-out at once: it also reads the group's
  GroupInServiceInstances, which needs the group's 1-minute metrics collection.
- A policy with AdjustmentType ExactCapacity and ScalingAdjustment 0 sets the desired capacity
  to 0 (Auto Scaling simple scaling policies).
- A metric math alarm evaluates its expression once per period on the metrics' datapoints, FILL
  replacing a missing one, and goes to ALARM when DatapointsToAlarm of the last
  EvaluationPeriods results breach the threshold (CloudWatch User Guide, "Using metric math" and
  "Evaluating an alarm"). Issue 17 point 10: with only tasks and instances in it, the first
  instances of a slow scale-out count as idle, and the alarm sets the group to 0 under the
  sensor. The DAG's scale_out sends a ScalingOut heartbeat at each check, which the alarm reads.

moto 5.2.5's CloudFormation creates neither alarms nor scaling policies, so the stack is
deployed into moto and the two resources are then created through the APIs CloudFormation
would call, with the template's own properties (references resolved against the stack).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

from .test_templates import REGION, aws, create_stack, load  # noqa: F401  (aws: fixture)

# The DAG's own constants (MWAA puts dags/ on sys.path; tests/dags/conftest.py does too).
if str(Path(__file__).resolve().parents[2] / "dags") not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
from windows_batch.cluster import SCALING_OUT_METRIC, SCALING_OUT_NAMESPACE


def resolve(value: Any, refs: dict[str, Any]) -> Any:
    """The template value with Ref and Fn::Sub resolved from `refs` (logical id -> value)."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return refs[value["Ref"]]
        if set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"]
            for name, resolved in refs.items():
                text = text.replace("${" + name + "}", str(resolved))
            return text
        return {k: resolve(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    return value


@pytest.fixture
def safety_net(aws: Any) -> dict[str, Any]:  # noqa: F811
    network = create_stack(aws, "network", "t-network")
    create_stack(
        aws,
        "ecs",
        "t-ecs",
        PrivateSubnetIds=network["PrivateSubnetIds"],
        InstanceSecurityGroupId=network["EcsInstanceSecurityGroupId"],
        IdleScaleInMinutes="45",
    )
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in aws.list_stack_resources(StackName="t-ecs")["StackResourceSummaries"]
    }
    template = load("ecs")
    refs: dict[str, Any] = {
        "AWS::StackName": "t-ecs",
        "IdleScaleInMinutes": 45,
        "Cluster": physical["Cluster"],
        "AutoScalingGroup": physical["AutoScalingGroup"],
    }
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    policy = resolve(template["Resources"]["IdleScaleInPolicy"]["Properties"], refs)
    autoscaling.put_scaling_policy(
        PolicyName="t-ecs-IdleScaleInPolicy", **{**policy, "Cooldown": int(policy["Cooldown"])}
    )
    # Ref of a scaling policy is its ARN.
    (created,) = autoscaling.describe_policies(PolicyNames=["t-ecs-IdleScaleInPolicy"])[
        "ScalingPolicies"
    ]
    refs["IdleScaleInPolicy"] = created["PolicyARN"]
    alarm = resolve(template["Resources"]["IdleClusterAlarm"]["Properties"], refs)
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    cloudwatch.put_metric_alarm(**alarm)
    return {"refs": refs, "alarm_name": alarm["AlarmName"]}


def test_the_idle_alarm_reads_our_clusters_tasks_and_our_groups_instances(
    safety_net: dict[str, Any],
) -> None:
    refs = safety_net["refs"]
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    alarm = cloudwatch.describe_alarms(AlarmNames=[safety_net["alarm_name"]])["MetricAlarms"][0]
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    tasks = queries["tasks"]["MetricStat"]
    assert tasks["Metric"]["Namespace"] == "AWS/ECS"
    assert tasks["Metric"]["MetricName"] == "CPUReservation"
    assert tasks["Metric"]["Dimensions"] == [{"Name": "ClusterName", "Value": refs["Cluster"]}]
    instances = queries["instances"]["MetricStat"]
    assert instances["Metric"]["Namespace"] == "AWS/AutoScaling"
    assert instances["Metric"]["MetricName"] == "GroupInServiceInstances"
    assert instances["Metric"]["Dimensions"] == [
        {"Name": "AutoScalingGroupName", "Value": refs["AutoScalingGroup"]}
    ]
    # scale_out's heartbeat, as windows_batch/cluster.py sends it.
    scaling = queries["scaling"]["MetricStat"]
    assert scaling["Metric"]["Namespace"] == SCALING_OUT_NAMESPACE
    assert scaling["Metric"]["MetricName"] == SCALING_OUT_METRIC
    assert scaling["Metric"]["Dimensions"] == [
        {"Name": "AutoScalingGroupName", "Value": refs["AutoScalingGroup"]}
    ]
    assert tasks["Period"] == instances["Period"] == scaling["Period"] == 60
    # Only the expression decides; a missing CPUReservation point (no RUNNING task) counts as 0,
    # and so does a missing heartbeat (no scale-out under way).
    assert [q["Id"] for q in alarm["Metrics"] if q.get("ReturnData")] == ["idle"]
    assert queries["idle"]["Expression"] == (
        "IF(FILL(instances, 0) > 0 AND FILL(tasks, 0) == 0 AND FILL(scaling, 0) == 0, 1, 0)"
    )
    # IdleScaleInMinutes consecutive idle minutes, every one of them.
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 45
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [refs["IdleScaleInPolicy"]]


def test_the_alarms_action_is_a_policy_of_our_group_that_sets_0(
    safety_net: dict[str, Any],
) -> None:
    refs = safety_net["refs"]
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    policies = autoscaling.describe_policies(AutoScalingGroupName=refs["AutoScalingGroup"])
    (policy,) = [
        p for p in policies["ScalingPolicies"] if p["PolicyARN"] == refs["IdleScaleInPolicy"]
    ]
    assert policy["PolicyType"] == "SimpleScaling"
    assert policy["AdjustmentType"] == "ExactCapacity"
    assert policy["ScalingAdjustment"] == 0
    group = refs["AutoScalingGroup"]
    autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=2)
    autoscaling.execute_policy(AutoScalingGroupName=group, PolicyName=policy["PolicyName"])
    described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    assert described["AutoScalingGroups"][0]["DesiredCapacity"] == 0


def test_the_group_collects_the_metric_the_alarm_reads_and_the_window_is_a_parameter() -> None:
    template = load("ecs")
    group = template["Resources"]["AutoScalingGroup"]["Properties"]
    assert {"Granularity": "1Minute", "Metrics": ["GroupInServiceInstances"]} in group[
        "MetricsCollection"
    ]
    minutes = template["Parameters"]["IdleScaleInMinutes"]
    assert minutes["Default"] == 30
    # CloudWatch evaluates an alarm over at most one day: 1440 one-minute periods.
    assert minutes["MaxValue"] == 1440
    alarm = template["Resources"]["IdleClusterAlarm"]["Properties"]
    assert alarm["EvaluationPeriods"] == {"Ref": "IdleScaleInMinutes"}
    assert alarm["DatapointsToAlarm"] == {"Ref": "IdleScaleInMinutes"}


def metric_math(expression: str, values: dict[str, float | None]) -> float:
    """One datapoint of a CloudWatch metric math expression: IF, FILL, AND, OR, comparisons.

    Parsed, not eval'ed: an expression using anything else fails the test.
    """
    python = expression.replace(" AND ", " and ").replace(" OR ", " or ")
    compare: dict[type, Callable[[float, float], bool]] = {
        ast.Gt: lambda a, b: a > b,
        ast.GtE: lambda a, b: a >= b,
        ast.Lt: lambda a, b: a < b,
        ast.LtE: lambda a, b: a <= b,
        ast.Eq: lambda a, b: a == b,
        ast.NotEq: lambda a, b: a != b,
    }

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BoolOp):
            results = [bool(value(v)) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return compare[type(node.ops[0])](value(node.left), value(node.comparators[0]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [value(a) for a in node.args]
            if node.func.id == "FILL":
                return args[1] if args[0] is None else args[0]
            if node.func.id == "IF":
                return args[1] if args[0] else args[2]
        raise AssertionError(f"not CloudWatch metric math this test knows: {ast.dump(node)}")

    return float(value(ast.parse(python, mode="eval").body))


def first_alarm_minute(alarm: dict[str, Any], minutes: Sequence[dict[str, Any]]) -> int | None:
    """The minute the alarm goes to ALARM, given each minute's metric datapoints (None: none)."""
    expression = next(q["Expression"] for q in alarm["Metrics"] if q.get("ReturnData"))
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    window, needed = alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]
    results: list[float] = []
    for minute, points in enumerate(minutes):
        results.append(metric_math(expression, points))
        breaching = [r >= alarm["Threshold"] for r in results[-window:]]
        if len(breaching) == window and sum(breaching) >= needed:
            return minute
    return None


def timeline(
    *,
    end: int,
    in_service: Callable[[int], int],
    checks: Callable[[int], bool],
    tasks: Callable[[int], bool],
) -> list[dict[str, Any]]:
    """Each minute's datapoints: instances in service (always reported), CPUReservation only
    while a task runs, the heartbeat only in a minute with a scale_out check."""
    return [
        {
            "instances": in_service(m),
            "tasks": 25.0 if tasks(m) else None,
            "scaling": 1.0 if checks(m) else None,
        }
        for m in range(end)
    ]


def slow_scale_out(airflow_dies_at: int | None = None) -> list[dict[str, Any]]:
    """Three instances for a run: two in service at minutes 2 and 3, the third only at 200
    (a slow launch, within a 4 h scale_out_timeout_s); registered at 215, when scale_out ends;
    7 minutes of image pull, tasks from 222 to 400, the group empty from 402."""
    alive = airflow_dies_at if airflow_dies_at is not None else 10**9

    def in_service(m: int) -> int:
        if m >= 402 and alive > 400:
            return 0
        return (m >= 2) + (m >= 3) + (m >= 200)

    return timeline(
        end=600,
        in_service=in_service,
        checks=lambda m: m < min(215, alive),
        tasks=lambda m: 222 <= m < 400 and alive > 222,
    )


def test_the_alarm_stays_quiet_through_a_slow_scale_out(safety_net: dict[str, Any]) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    alarm = cloudwatch.describe_alarms(AlarmNames=[safety_net["alarm_name"]])["MetricAlarms"][0]
    assert first_alarm_minute(alarm, slow_scale_out()) is None


def test_the_alarm_still_fires_when_airflow_dies_during_the_scale_out(
    safety_net: dict[str, Any],
) -> None:
    """The heartbeat stops with Airflow: IdleScaleInMinutes (45 here) later the group goes."""
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    alarm = cloudwatch.describe_alarms(AlarmNames=[safety_net["alarm_name"]])["MetricAlarms"][0]
    assert first_alarm_minute(alarm, slow_scale_out(airflow_dies_at=60)) == 60 + 45 - 1
    # After its run's tasks, with Airflow gone before scale_in, the same.
    assert first_alarm_minute(alarm, slow_scale_out(airflow_dies_at=300)) == 400 + 45 - 1
