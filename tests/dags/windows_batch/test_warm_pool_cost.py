"""The warm pool in the cost model: estimate, refill and EBS, and the time to the first task.

AWS's rules encoded here: a stopped instance bills only its EBS volumes ("you pay only for the
volumes that you use and the Elastic IP addresses attached to the instances", EC2 Auto Scaling
user guide, warm pools: warm pool instance state); EBS is priced per GB-month of 730 hours;
EC2 bills each start of a Windows instance for at least 60 seconds; Auto Scaling names each
launch in its activity history "Launching a new EC2 instance: i-...", "... from warm pool:
i-..." or "... into warm pool: i-..." (AWS's warm pool samples, aws-samples
amazon-ec2-auto-scaling-group-examples).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.stub import Stubber

from windows_batch import cost, cost_report
from windows_batch import notes as notes_mod
from windows_batch import settings as settings_mod

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CLUSTER = GROUP = "windows-batch"
W, C = "i-0aaaaaaaaaaaaaaaa", "i-0cccccccccccccccc"
REFILL = "i-0ffffffffffffffff"
CI_W = f"arn:aws:ecs:us-east-1:123456789012:container-instance/{CLUSTER}/wwww"
CI_C = f"arn:aws:ecs:us-east-1:123456789012:container-instance/{CLUSTER}/cccc"
TASK = f"arn:aws:ecs:us-east-1:123456789012:task/{CLUSTER}/t1"
POOL = dataclasses.replace(
    cost.CostSettings(), warm_pool_size=4, boot_s=315, pull_s=0, warm_start_s=120
)


def at(offset_s: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset_s, tz=UTC)


# Triggered at T0; scale_out asked at +40. W was started from the pool at +45, InService at +130
# (its hook released), registered at +150; C launched cold at +45, InService at +420, registered
# at +400 (its agent first). The first task was placed on W at +200, pulled nothing (the image is
# in the AMI) and started at +215.
TIMELINE = cost.Timeline(
    instances=[
        cost.InstanceSpan(
            W, "c5.xlarge", "on-demand", T0 + 45, T0 + 150, origin="warm", in_service_at=T0 + 130
        ),
        cost.InstanceSpan(
            C, "c5.xlarge", "on-demand", T0 + 45, T0 + 400, origin="cold", in_service_at=T0 + 420
        ),
    ],
    tasks=[
        cost.TaskSpan(
            W,
            pull_started_at=T0 + 204,
            pull_stopped_at=T0 + 205,
            started_at=T0 + 215,
            created_at=T0 + 200,
        ),
        cost.TaskSpan(C, started_at=T0 + 430, created_at=T0 + 410),
    ],
)
FIRST_TASK_LINE = (
    "first task: 3.6 min after the trigger (queued 0.7 min, start from stopped 1.5 min, "
    "registration 0.3 min, cluster wait 0.8 min, pull 0.1 min, container start 0.2 min); "
    "instances: 1 cold, 1 warm"
)


def test_the_time_to_the_first_task_of_a_known_timeline_and_its_parts() -> None:
    found = cost.first_task(TIMELINE, triggered_at=T0, scale_out_at=T0 + 40)
    assert found is not None
    assert found.total_s == 215
    assert dict(found.parts) == {
        "queued": 40,
        "start from stopped": 90,
        "registration": 20,
        "cluster wait": 50,
        "pull": 5,
        "container start": 10,
    }
    assert sum(seconds for _, seconds in found.parts) == found.total_s
    assert found.line() == FIRST_TASK_LINE


def test_a_cold_host_boots_and_unknown_points_fold_into_the_part_before() -> None:
    cold_first = dataclasses.replace(
        TIMELINE, tasks=[cost.TaskSpan(C, started_at=T0 + 430, created_at=T0 + 410)]
    )
    found = cost.first_task(cold_first, triggered_at=T0, scale_out_at=None)
    assert found is not None
    # No scale-out time: queued is 0; the agent registered before InService: all of it is boot.
    assert dict(found.parts) == {
        "queued": 0,
        "boot": 400,
        "registration": 0,
        "cluster wait": 10,
        "pull": 0,
        "container start": 20,
    }
    assert (
        cost.first_task(dataclasses.replace(TIMELINE, tasks=[]), triggered_at=T0, scale_out_at=0)
        is None
    )


def test_the_estimate_starts_warm_when_the_pool_covers_the_cluster_and_prices_the_refill() -> None:
    prices = cost.prices_from(POOL)
    covered = cost.estimate(
        [600.0] * 12, size=4, slots_per_instance=3, settings=POOL, prices=prices
    )
    assert covered.boot_s == 120
    assert covered.first_task_s == 30 + 120
    instance_h = 4 * (120 + 600 + 60) / 3600
    refill_h = 4 * 315 / 3600
    assert covered.pool is not None
    assert covered.pool.refill_hours == pytest.approx(refill_h)
    assert covered.cost_usd == pytest.approx((instance_h + refill_h) * 0.354)
    # 4 x 100 GiB x 0.08 USD per GB-month over 730 hours.
    assert covered.pool.ebs_usd_per_h == pytest.approx(4 * 100 * 0.08 / 730)
    assert covered.line() == (
        "estimate: 4 instances, about 13 min (boot 2.0 min, pull 0.0 min, compute 10 min, "
        "scale-in 1.0 min), 0.87 instance-hours (on-demand c5.xlarge), about $0.43; warm pool: "
        "4 of 4 start from stopped; refill 4 x 5.2 min cold boot = 0.35 instance-hours, about "
        "$0.12; the stopped pool (4 x 100 GiB EBS) bills about $0.044/h; prices: us-east-1 "
        "2025 table"
    )
    # Five instances: the pool covers four, the fifth boots cold and sets the time.
    partial = cost.estimate(
        [600.0] * 15, size=5, slots_per_instance=3, settings=POOL, prices=prices
    )
    assert partial.boot_s == 315
    assert partial.pool is not None
    assert (partial.pool.from_pool, partial.pool.cold) == (4, 1)
    assert "warm pool: 4 of 5 start from stopped, 1 launch cold; refill 4 x" in partial.line()
    # No pool: nothing of it in the line or the cost.
    none = dataclasses.replace(POOL, warm_pool_size=0)
    cold = cost.estimate([600.0] * 12, size=4, slots_per_instance=3, settings=none, prices=prices)
    assert (cold.boot_s, cold.pool) == (315, None)
    assert "warm pool" not in cold.line()


def test_settings_read_the_pool_and_refuse_bad_values() -> None:
    env = {
        "AIRFLOW__WINDOWS_BATCH__WARM_POOL_SIZE": "6",
        "AIRFLOW__WINDOWS_BATCH__ROOT_VOLUME_GIB": "60",
        "AIRFLOW__WINDOWS_BATCH__WARM_START_S": "90",
    }
    read = cost.load_cost_settings(env, backend="ecs")
    assert (read.warm_pool_size, read.root_volume_gib, read.warm_start_s) == (6, 60, 90)
    assert read.pool_covers(6)
    assert not read.pool_covers(7)
    with pytest.raises(cost.CostSettingsError, match="AIRFLOW__WINDOWS_BATCH__WARM_POOL_SIZE"):
        cost.load_cost_settings({"AIRFLOW__WINDOWS_BATCH__WARM_POOL_SIZE": "-1"}, backend="ecs")


def activity(description: str, start: float, end: float) -> dict[str, Any]:
    return {
        "ActivityId": f"id-{description[-4:]}-{start}",
        "AutoScalingGroupName": GROUP,
        "Cause": "At 2026-01-01T00:00:40Z a user request explicitly set group desired capacity",
        "Description": description,
        "StartTime": at(start),
        "EndTime": at(end),
        "StatusCode": "Successful",
    }


class TaskInstance:
    """What scale_in's task instance answers: scale_out's XCom, and the run's ids."""

    dag_id = "d"
    run_id = "r"

    def xcom_pull(self, *, task_ids: Any, key: str) -> Any:
        known = {
            ("scale_out", cost_report.INSTANCES_KEY): [
                {"arn": CI_W, "instance_id": W, "registered_at": T0 + 150},
                {"arn": CI_C, "instance_id": C, "registered_at": T0 + 400},
            ],
            ("scale_out", cost_report.SCALE_OUT_AT_KEY): T0 + 40,
            ("plan_tasks", cost_report.ESTIMATE_KEY): "estimate: 2 instances",
        }
        if task_ids == ["run_tasks", "aggregate"]:
            return [TASK]
        return known.get((task_ids, key))


def test_scale_in_reports_the_refill_the_pool_s_ebs_and_the_first_task_in_log_and_note(
    monkeypatch: pytest.MonkeyPatch,
    ecs: tuple[Any, Stubber],
    autoscaling: tuple[Any, Stubber],
    ec2: tuple[Any, Stubber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecs_client, ecs_stub = ecs
    asg_client, asg_stub = autoscaling
    ec2_client, ec2_stub = ec2
    ecs_stub.add_response(
        "describe_tasks",
        {
            "tasks": [
                {
                    "taskArn": TASK,
                    "containerInstanceArn": CI_W,
                    "createdAt": at(200),
                    "pullStartedAt": at(204),
                    "pullStoppedAt": at(205),
                    "startedAt": at(215),
                    "stoppedAt": at(800),
                }
            ],
            "failures": [],
        },
        {"cluster": CLUSTER, "tasks": [TASK]},
    )
    asg_stub.add_response(
        "describe_scaling_activities",
        {
            "Activities": [  # newest first
                activity(f"Launching a new EC2 instance into warm pool: {REFILL}", 900, 1200),
                activity(f"Terminating EC2 instance: {W}", 850, 900),
                activity(f"Terminating EC2 instance: {C}", 850, 900),
                activity(f"Launching a new EC2 instance: {C}", 45, 420),
                activity(f"Launching a new EC2 instance from warm pool: {W}", 45, 130),
            ]
        },
        {"AutoScalingGroupName": GROUP},
    )
    ec2_stub.add_response(
        "describe_instances",
        {
            "Reservations": [
                {
                    "Instances": [
                        {"InstanceId": W, "InstanceType": "c5.xlarge"},
                        {"InstanceId": C, "InstanceType": "c5.xlarge"},
                    ]
                }
            ]
        },
        {"InstanceIds": [W, C]},
    )
    clients = {"ecs": ecs_client, "autoscaling": asg_client, "ec2": ec2_client}
    monkeypatch.setattr(cost_report, "_client", lambda _s, service, **_k: clients[service])
    settings = settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__CLUSTER_NAME": CLUSTER,
            "AIRFLOW__WINDOWS_BATCH__ASG_NAME": GROUP,
            "AIRFLOW__WINDOWS_BATCH__PRICE_SOURCE": "table",
            "AIRFLOW__WINDOWS_BATCH__WARM_POOL_SIZE": "4",
            "AIRFLOW__WINDOWS_BATCH__BOOT_S": "315",
        }
    )
    dag_run = SimpleNamespace(run_after=at(0), start_date=at(5), dag_id="d", run_id="r")
    with caplog.at_level("INFO", logger=cost_report.log.name):
        part = cost_report.report_usage(
            settings,
            {"ti": TaskInstance(), "dag_run": dag_run},
            task_ids=["run_tasks", "aggregate"],
        )
    assert part is not None
    line, _, _ = part.partition("\n")
    # The refill launch is the pool's, not the run's: two instances, the refill priced apart.
    assert "; 2 instances, 1 task, " in line
    assert line.endswith(
        "warm pool: 1 of 2 started from stopped, 1 launched cold; refill (estimated) 1 x 5.2 min "
        "cold boot = 0.087 instance-hours, about $0.03; the stopped pool (4 x 100 GiB EBS) bills "
        "about $0.044/h; 1 launched into the pool since the run began"
    )
    first = (
        "first task: 3.6 min after the trigger (queued 0.7 min, start from stopped 1.5 min, "
        "registration 0.3 min, cluster wait 0.8 min, pull 0.1 min, container start 0.2 min); "
        "instances: 1 cold, 1 warm"
    )
    logged = [r.getMessage() for r in caplog.records]
    assert line in logged
    assert first in logged
    assert part == f"{line}\n{first}"
    note = notes_mod.compose(
        {notes_mod.COST_PART: part, cost_report.ESTIMATE_KEY: "estimate: 2 instances"}
    )
    assert note == f"{line}\n{first}\n\nestimate: 2 instances"
