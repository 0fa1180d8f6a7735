"""cluster.py: the AWS calls behind scale_out/scale_in, against botocore's Stubber."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from windows_batch import settings as settings_mod
from windows_batch.cluster import (
    SCALING_OUT_METRIC,
    SCALING_OUT_NAMESPACE,
    container_hosts,
    run_task_group,
    set_desired_capacity,
    signal_scaling_out,
    stop_group_tasks,
)
from windows_batch.settings import SettingsError

from .conftest import stubbed

GROUP = "windows-batch"
CLUSTER = "windows-batch"


def test_a_desired_capacity_above_the_groups_maximum_names_cluster_size(
    autoscaling: tuple[Any, Stubber],
) -> None:
    client, stubber = autoscaling
    stubber.add_client_error(
        "set_desired_capacity",
        service_error_code="ValidationError",
        service_message="New SetDesiredCapacity value 12 is above max value 10",
        http_status_code=400,
        expected_params={
            "AutoScalingGroupName": GROUP,
            "DesiredCapacity": 12,
            "HonorCooldown": False,
        },
    )
    with pytest.raises(AirflowFailException, match=r"^cluster_size: .*refused .* 12: .*max value"):
        set_desired_capacity(client, GROUP, 12)


def test_a_refused_scale_in_names_the_groups_min_size(autoscaling: tuple[Any, Stubber]) -> None:
    client, stubber = autoscaling
    stubber.add_client_error(
        "set_desired_capacity", service_error_code="ValidationError", http_status_code=400
    )
    with pytest.raises(AirflowFailException, match=r"^the group's MinSize \(must be 0\)"):
        set_desired_capacity(client, GROUP, 0)


def test_other_errors_stay_retryable(autoscaling: tuple[Any, Stubber]) -> None:
    client, stubber = autoscaling
    stubber.add_client_error("set_desired_capacity", service_error_code="ScalingActivityInProgress")
    with pytest.raises(ClientError, match="ScalingActivityInProgress"):
        set_desired_capacity(client, GROUP, 3)


def test_container_hosts_follows_every_page_and_tells_connected_agents(
    ecs: tuple[Any, Stubber],
) -> None:
    client, stubber = ecs
    arns = [
        f"arn:aws:ecs:us-east-1:123456789012:container-instance/{CLUSTER}/{i}" for i in range(3)
    ]
    stubber.add_response(
        "list_container_instances",
        {"containerInstanceArns": arns[:2], "nextToken": "page-2"},
        {"cluster": CLUSTER, "status": "ACTIVE"},
    )
    stubber.add_response(
        "list_container_instances",
        {"containerInstanceArns": arns[2:]},
        {"cluster": CLUSTER, "status": "ACTIVE", "nextToken": "page-2"},
    )
    stubber.add_response(
        "describe_container_instances",
        {
            "containerInstances": [
                {"containerInstanceArn": arns[0], "ec2InstanceId": "i-0", "agentConnected": True},
                {"containerInstanceArn": arns[1], "ec2InstanceId": "i-1", "agentConnected": False},
                {"containerInstanceArn": arns[2], "ec2InstanceId": "i-2", "agentConnected": True},
            ]
        },
        {"cluster": CLUSTER, "containerInstances": arns},
    )
    # Every ACTIVE container instance, across pages, with whether its agent is connected.
    assert container_hosts(client, CLUSTER) == {"i-0": True, "i-1": False, "i-2": True}


def test_scale_in_stops_only_the_runs_own_tasks_still_running(ecs: tuple[Any, Stubber]) -> None:
    client, stubber = ecs
    ours = run_task_group("windows-batch-compute-dag", "manual__2026-01-02T03:04:05+00:00")
    other = run_task_group("windows-batch-compute-dag", "manual__2026-01-01T00:00:00+00:00")
    assert ours != other
    assert ours.startswith("windows-batch:")
    assert len(ours) <= 255
    arns = [f"arn:aws:ecs:us-east-1:123456789012:task/{CLUSTER}/{i:032x}" for i in range(3)]
    listed = {"cluster": CLUSTER, "desiredStatus": "RUNNING"}
    stubber.add_response("list_tasks", {"taskArns": arns[:2], "nextToken": "t"}, listed)
    stubber.add_response("list_tasks", {"taskArns": arns[2:]}, {**listed, "nextToken": "t"})
    tasks = [
        {"taskArn": arns[0], "group": ours, "desiredStatus": "RUNNING"},
        {"taskArn": arns[1], "group": other, "desiredStatus": "RUNNING"},
        {"taskArn": arns[2], "group": ours, "desiredStatus": "RUNNING"},
    ]
    stubber.add_response("describe_tasks", {"tasks": tasks}, {"cluster": CLUSTER, "tasks": arns})
    for arn in (arns[0], arns[2]):
        stubber.add_response(
            "stop_task",
            {"task": {"taskArn": arn}},
            {"cluster": CLUSTER, "task": arn, "reason": "r"},
        )
    assert stop_group_tasks(client, CLUSTER, ours, "r") == [arns[0], arns[2]]


def test_the_scaling_out_heartbeat_names_the_group() -> None:
    """What the idle alarm reads (tests/cloudformation/test_safety_net.py holds ecs.yaml to the
    same names): one datapoint of 1 for this minute, dimension AutoScalingGroupName."""
    for client, stubber in stubbed("cloudwatch"):
        stubber.add_response(
            "put_metric_data",
            {},
            {
                "Namespace": SCALING_OUT_NAMESPACE,
                "MetricData": [
                    {
                        "MetricName": SCALING_OUT_METRIC,
                        "Dimensions": [{"Name": "AutoScalingGroupName", "Value": GROUP}],
                        "Value": 1.0,
                        "Unit": "Count",
                    }
                ],
            },
        )
        signal_scaling_out(client, GROUP)


def test_scale_out_checks_come_often_enough_for_the_idle_alarm() -> None:
    """A check at most every 300 s: the alarm's shortest window (IdleScaleInMinutes) is 10."""
    prefix = settings_mod.PREFIX
    assert settings_mod.load({prefix + "SCALE_POKE_INTERVAL_S": "300"}).scale_poke_interval_s == 300
    with pytest.raises(SettingsError, match="SCALE_POKE_INTERVAL_S=301 is outside"):
        settings_mod.load({prefix + "SCALE_POKE_INTERVAL_S": "301"})
