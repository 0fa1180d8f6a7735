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

moto 5.2.5's CloudFormation creates neither alarms nor scaling policies, so the stack is
deployed into moto and the two resources are then created through the APIs CloudFormation
would call, with the template's own properties (references resolved against the stack).
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from .test_templates import REGION, aws, create_stack, load  # noqa: F401  (aws: fixture)


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
        ResultsBucketName="results-bucket",
        RepositoryUri="123456789012.dkr.ecr.us-east-1.amazonaws.com/t/bersim",
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
    assert tasks["Period"] == instances["Period"] == 60
    # Only the expression decides; a missing CPUReservation point (no RUNNING task) counts as 0.
    assert [q["Id"] for q in alarm["Metrics"] if q.get("ReturnData")] == ["idle"]
    assert queries["idle"]["Expression"] == (
        "IF(FILL(instances, 0) > 0 AND FILL(tasks, 0) == 0, 1, 0)"
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
