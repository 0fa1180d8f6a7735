"""cost.py: phases and cost from a known timeline and from AWS's answers, estimates, auto."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from windows_batch import cost

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CLUSTER = "windows-batch"
GROUP = "windows-batch"
A, B = "i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"
CI_A = f"arn:aws:ecs:us-east-1:123456789012:container-instance/{CLUSTER}/aaaa"
CI_B = f"arn:aws:ecs:us-east-1:123456789012:container-instance/{CLUSTER}/bbbb"
TASKS = [f"arn:aws:ecs:us-east-1:123456789012:task/{CLUSTER}/t{i}" for i in (1, 2, 3)]

# Instance A (Spot) boots 630 s; its two tasks pull together, the first one starts while the
# second still pulls (that counts as compute); B (on-demand) starts a minute later, boots 660 s,
# runs one task. The group scales both in at +1500 s.
INSTANCES = [
    cost.InstanceSpan(A, "c5.xlarge", "spot", T0, T0 + 630, T0 + 1500, T0 + 1620),
    cost.InstanceSpan(B, "c5.xlarge", "on-demand", T0 + 60, T0 + 720, T0 + 1500, T0 + 1560),
]
TIMES = [  # (instance, pullStartedAt, pullStoppedAt, startedAt, stoppedAt), seconds after T0
    (A, 640, 800, 810, 1030),
    (A, 642, 882, 890, 1130),
    (B, 730, 970, 975, 1275),
]
SPANS = [cost.TaskSpan(i, T0 + ps, T0 + pe, T0 + s, T0 + e) for i, ps, pe, s, e in TIMES]
EXPECTED_LINE = (
    "cluster: 0.87 instance-hours (0.42 on-demand c5.xlarge, 0.45 spot c5.xlarge), about "
    "$0.26; boot 11 min, pull 3.4 min, compute 5.2 min, idle 5.2 min, scale-in 1.5 min per "
    "instance; 2 instances, 3 tasks, 27 min in all; prices: us-east-1 2025 table"
)
TABLE = cost.CostSettings()


def test_each_instance_s_life_splits_into_phases_that_add_up_to_it() -> None:
    a = cost.instance_phases(INSTANCES[0], SPANS, now=T0 + 9999)
    assert a == {"boot": 630, "pull": 170, "compute": 320, "idle": 380, "scale-in": 120}
    b = cost.instance_phases(INSTANCES[1], SPANS, now=T0 + 9999)
    assert b == {"boot": 660, "pull": 240, "compute": 300, "idle": 240, "scale-in": 60}
    assert sum(a.values()) == 1620
    assert sum(b.values()) == 1500


def test_the_phase_and_cost_line_of_a_known_timeline() -> None:
    used = cost.usage(INSTANCES, SPANS, now=T0 + 9999, prices=cost.prices_from(TABLE))
    # Spot at 0.7 x 0.354 USD/h for 0.45 h, on-demand at 0.354 USD/h for 1500 s.
    assert used.cost_usd == pytest.approx(0.45 * 0.7 * 0.354 + 1500 / 3600 * 0.354)
    assert used.hours == {
        ("spot", "c5.xlarge"): pytest.approx(0.45),
        ("on-demand", "c5.xlarge"): pytest.approx(1500 / 3600),
    }
    assert used.line() == EXPECTED_LINE


def test_the_line_is_kept_whole_in_a_full_note() -> None:
    note = cost.append_to_note("x" * 990, EXPECTED_LINE, limit=1000)
    assert len(note) == 1000
    assert note.endswith("…\n\n" + EXPECTED_LINE)
    assert cost.append_to_note("short", "line", limit=1000) == "short\n\nline"


def test_an_instance_still_running_counts_until_now_and_a_short_one_bills_a_minute() -> None:
    running = cost.InstanceSpan("i-0ccccccccccccccc1", "c5.xlarge", "on-demand", T0, T0 + 5)
    used = cost.usage([running], [], now=T0 + 20, prices=cost.prices_from(TABLE))
    assert sum(used.phase_s.values()) == 20
    assert used.instance_hours == pytest.approx(60 / 3600)  # EC2's 60-second minimum
    unknown = dataclasses.replace(running, instance_type="x9.huge")
    line = cost.usage([unknown], [], now=T0 + 20, prices=cost.prices_from(TABLE)).line()
    assert "cost unknown (no price for x9.huge)" in line


def test_an_unknown_registration_time_ends_boot_at_the_first_pull() -> None:
    instance = dataclasses.replace(INSTANCES[1], registered_at=None)
    assert cost.instance_phases(instance, SPANS, now=T0)["boot"] == 730 - 60


def at(offset_s: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset_s, tz=UTC)


def ecs_task(arn: str, container_instance: str, times: tuple[Any, ...]) -> dict[str, Any]:
    _, pull_start, pull_stop, start, stop = times
    return {
        "taskArn": arn,
        "clusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{CLUSTER}",
        "containerInstanceArn": container_instance,
        "lastStatus": "STOPPED",
        "pullStartedAt": at(pull_start),
        "pullStoppedAt": at(pull_stop),
        "startedAt": at(start),
        "stoppedAt": at(stop),
    }


def activity(description: str, start: float, end: float | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ActivityId": f"id-{description[-4:]}-{start}",
        "AutoScalingGroupName": GROUP,
        "Cause": "At 2026-01-01T00:00:00Z a user request explicitly set group desired capacity",
        "Description": description,
        "StartTime": at(start),
        "StatusCode": "Successful",
    }
    if end is not None:
        entry["EndTime"] = at(end)
    return entry


def test_aws_answers_make_the_same_timeline_and_line(
    ecs: tuple[Any, Stubber], autoscaling: tuple[Any, Stubber], ec2: tuple[Any, Stubber]
) -> None:
    ecs_client, ecs_stub = ecs
    asg_client, asg_stub = autoscaling
    ec2_client, ec2_stub = ec2
    ecs_stub.add_response(
        "describe_tasks",
        {
            "tasks": [
                ecs_task(arn, CI_A if times[0] == A else CI_B, times)
                for arn, times in zip(TASKS, TIMES, strict=True)
            ],
            "failures": [],
        },
        {"cluster": CLUSTER, "tasks": TASKS},
    )
    # B was recorded at scale-out; A is only known through its tasks.
    ecs_stub.add_response(
        "describe_container_instances",
        {
            "containerInstances": [
                {
                    "containerInstanceArn": CI_A,
                    "ec2InstanceId": A,
                    "registeredAt": at(630),
                    "status": "INACTIVE",
                    "attributes": [{"name": "ecs.instance-type", "value": "c5.xlarge"}],
                }
            ],
            "failures": [],
        },
        {"cluster": CLUSTER, "containerInstances": [CI_A]},
    )
    asg_stub.add_response(
        "describe_scaling_activities",
        {
            "Activities": [  # newest first, as Auto Scaling lists them
                activity(f"Terminating EC2 instance: {A}", 1500, 1620),
                activity(f"Terminating EC2 instance: {B}", 1500, 1560),
                activity(f"Launching a new EC2 instance: {B}", 60, 90),
                activity(f"Launching a new EC2 instance: {A}", 0, 30),
                activity("Terminating EC2 instance: i-0ddddddddddddddd0", -7200, -7000),
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
                        {"InstanceId": A, "InstanceType": "c5.xlarge", "InstanceLifecycle": "spot"},
                        {"InstanceId": B, "InstanceType": "c5.xlarge"},
                    ]
                }
            ]
        },
        {"InstanceIds": [A, B]},
    )
    timeline = cost.collect_timeline(
        ecs=ecs_client,
        autoscaling=asg_client,
        ec2=ec2_client,
        cluster=CLUSTER,
        group=GROUP,
        task_arns=TASKS,
        since=at(-5),
        known=[
            {"arn": CI_B, "instance_id": B, "registered_at": T0 + 720, "instance_type": "c5.xlarge"}
        ],
    )
    assert timeline.missing == []
    # Both launched cold; each went InService when its launch activity ended.
    assert sorted(timeline.instances, key=lambda i: i.instance_id) == [
        dataclasses.replace(INSTANCES[0], origin="cold", in_service_at=T0 + 30),
        dataclasses.replace(INSTANCES[1], origin="cold", in_service_at=T0 + 90),
    ]
    assert timeline.tasks == SPANS
    line = cost.usage(
        timeline.instances, timeline.tasks, now=T0 + 9999, prices=cost.prices_from(TABLE)
    )
    assert line.line() == EXPECTED_LINE


def test_a_source_that_refuses_is_reported_and_the_rest_still_used(
    ecs: tuple[Any, Stubber], autoscaling: tuple[Any, Stubber]
) -> None:
    ecs_client, ecs_stub = ecs
    asg_client, asg_stub = autoscaling
    ecs_stub.add_response("describe_tasks", {"tasks": [], "failures": []})
    asg_stub.add_client_error(
        "describe_scaling_activities", service_error_code="AccessDenied", http_status_code=403
    )
    timeline = cost.collect_timeline(
        ecs=ecs_client,
        autoscaling=asg_client,
        ec2=None,
        cluster=CLUSTER,
        group=GROUP,
        task_arns=TASKS[:1],
        since=at(0),
        known=[{"instance_id": B, "registered_at": T0 + 720, "instance_type": "c5.xlarge"}],
    )
    assert timeline.missing == ["1 of 1 ECS tasks", "scaling activities (ClientError)"]
    assert [(i.instance_id, i.launched_at, i.purchase) for i in timeline.instances] == [
        (B, T0 + 720, "on-demand")
    ]


def test_spot_prices_are_the_windows_prices_in_effect_now_averaged_over_zones(
    ec2: tuple[Any, Stubber],
) -> None:
    client, stub = ec2
    now = at(0)

    def entry(zone: str, price: str, offset_s: float) -> dict[str, Any]:
        return {
            "AvailabilityZone": zone,
            "InstanceType": "c5.xlarge",
            "ProductDescription": "Windows",
            "SpotPrice": price,
            "Timestamp": at(offset_s),
        }

    stub.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                entry("us-east-1a", "0.2400", -600),
                entry("us-east-1a", "0.2600", -60),  # the later change is the one in effect
                entry("us-east-1b", "0.2200", -3600),
                {**entry("us-east-1c", "0.0700", -60), "ProductDescription": "Linux/UNIX"},
            ]
        },
        {
            "InstanceTypes": ["c5.xlarge"],
            "ProductDescriptions": ["Windows", "Windows (Amazon VPC)"],
            "StartTime": now,
            "EndTime": now,
        },
    )
    spot = cost.spot_prices(client, ["c5.xlarge"], now=now)
    assert spot == {"c5.xlarge": pytest.approx(0.24)}
    prices = cost.prices_from(TABLE, spot)
    assert prices.price("c5.xlarge", "spot") == pytest.approx(0.24)
    assert prices.price("c5.xlarge", "on-demand") == 0.354
    assert prices.price("m5.xlarge", "spot") == pytest.approx(0.7 * 0.376)  # table's fraction


def test_makespan_is_the_list_schedule_in_task_order() -> None:
    assert cost.makespan_s([10, 10, 10, 10], 2) == 20
    assert cost.makespan_s([30, 10, 10, 10], 2) == 30
    assert cost.makespan_s([5, 1], 8) == 5
    assert cost.makespan_s([], 4) == 0


def test_the_estimate_for_a_given_size_adds_boot_pull_compute_and_scale_in() -> None:
    settings = dataclasses.replace(TABLE, boot_s=600, pull_s=240, scale_in_s=60)
    found = cost.estimate(
        [100.0] * 16,
        size=2,
        slots_per_instance=4,
        settings=settings,
        prices=cost.prices_from(settings),
    )
    assert found.compute_s == 200  # 16 tasks on 8 slots: two rounds
    assert found.wall_s == 1100
    assert found.instance_hours == pytest.approx(2 * 1100 / 3600)
    assert found.cost_usd == pytest.approx(2 * 1100 / 3600 * 0.354)
    spot = dataclasses.replace(settings, purchase_option="spot", on_demand_base=1)
    mixed = cost.estimate(
        [100.0] * 16, size=2, slots_per_instance=4, settings=spot, prices=cost.prices_from(spot)
    )
    assert mixed.hours == {
        ("on-demand", "c5.xlarge"): pytest.approx(1100 / 3600),
        ("spot", "c5.xlarge"): pytest.approx(1100 / 3600),
    }
    assert mixed.cost_usd == pytest.approx(1100 / 3600 * 0.354 * 1.7)
    assert found.line() == (
        "estimate: 2 instances, about 18 min (boot 10 min, pull 4.0 min, compute 3.3 min, "
        "scale-in 1.0 min), 0.61 instance-hours (on-demand c5.xlarge), about $0.22; "
        "prices: us-east-1 2025 table"
    )


def workload_s(settings: cost.CostSettings, shape: str = "skewed") -> list[float]:
    """Task seconds of a study-like fan-out: 200 tasks whose work falls off geometrically (a few
    long ones, many short ones), 200 equal ones, or 40 short ones."""
    if shape == "equal":
        work = [300.0] * 200
    elif shape == "small":
        work = [120.0 * 0.97**i for i in range(40)]
    else:
        work = [3000.0 * 0.98**i for i in range(200)]
    return [settings.task_start_s + w for w in work]


def auto(task_s: list[float], settings: cost.CostSettings, max_size: int = 10) -> cost.Sizing:
    return cost.size_cluster(
        task_s,
        requested="auto",
        max_size=max_size,
        slots_per_instance=4,
        settings=settings,
        prices=cost.prices_from(settings),
    )


@pytest.mark.parametrize("shape", ["skewed", "equal", "small"])
def test_auto_takes_the_cheapest_size_within_the_factor_of_the_fastest(shape: str) -> None:
    task_s = workload_s(TABLE, shape)
    sizing = auto(task_s, TABLE)
    every = [
        cost.estimate(
            task_s, size=n, slots_per_instance=4, settings=TABLE, prices=cost.prices_from(TABLE)
        )
        for n in range(1, 11)
    ]
    fastest = min(e.wall_s for e in every)
    assert sizing.fastest is not None
    assert sizing.fastest.wall_s == fastest
    assert sizing.chosen.wall_s <= 1.25 * fastest
    cheaper = [e for e in every if e.cost_usd is not None and e.cost_usd < sizing.chosen.cost_usd]
    assert all(e.wall_s > 1.25 * fastest for e in cheaper)
    assert 1 < sizing.size < 10  # neither extreme: boot time is shared, compute is not
    assert sizing.line().startswith(f"cluster_size auto -> {sizing.size} (cheapest within 1.25x")


def test_auto_never_starts_more_instances_than_the_tasks_can_fill() -> None:
    assert auto([60.0] * 6, TABLE).size == 1  # 6 short tasks: one instance is within 1.25x
    instant = dataclasses.replace(TABLE, boot_s=0, pull_s=0, scale_in_s=0)
    # Nothing shared: 16 equal tasks cost the same on any size that fits them, so the fastest.
    assert auto([600.0] * 16, instant).size == 4


def test_auto_with_a_stricter_factor_takes_more_instances() -> None:
    task_s = workload_s(TABLE)
    loose = auto(task_s, dataclasses.replace(TABLE, auto_slowdown=2.0))
    strict = auto(task_s, dataclasses.replace(TABLE, auto_slowdown=1.05))
    assert loose.size < auto(task_s, TABLE).size < strict.size


def test_a_requested_size_is_kept() -> None:
    sizing = cost.size_cluster(
        [60.0] * 6,
        requested=7,
        max_size=10,
        slots_per_instance=4,
        settings=TABLE,
        prices=cost.prices_from(TABLE),
    )
    assert sizing.size == 7
    assert sizing.line().startswith("cluster_size 7; estimate: 7 instances, ")


def test_settings_read_prices_and_refuse_bad_values_naming_the_key() -> None:
    env = {
        "AIRFLOW__WINDOWS_BATCH__PRICES": "c5.xlarge=0.40, x9.huge=9",
        "AIRFLOW__WINDOWS_BATCH__PURCHASE_OPTION": "Spot",
        "AIRFLOW__WINDOWS_BATCH__BOOT_S": "300",
    }
    settings = cost.load_cost_settings(env, backend="ecs")
    assert settings.on_demand_usd_per_h["c5.xlarge"] == 0.40
    assert settings.on_demand_usd_per_h["x9.huge"] == 9
    assert settings.on_demand_usd_per_h["m5.xlarge"] == 0.376
    assert (settings.purchase_option, settings.boot_s, settings.price_source) == (
        "spot",
        300,
        "aws",
    )
    assert cost.load_cost_settings({}, backend="local").price_source == "table"
    for key, value in [("PRICES", "c5.xlarge"), ("BOOT_S", "soon"), ("PURCHASE_OPTION", "free")]:
        with pytest.raises(cost.CostSettingsError, match=f"AIRFLOW__WINDOWS_BATCH__{key}"):
            cost.load_cost_settings({f"AIRFLOW__WINDOWS_BATCH__{key}": value}, backend="ecs")
    assert math.isclose(cost.CostSettings().spot_price_fraction, 0.7)
    assert timedelta(seconds=cost.CostSettings().boot_s) == timedelta(minutes=15)


@pytest.mark.parametrize(
    ("source", "answer", "expected"),
    [
        pytest.param("aws", {"SpotPrice": "0.2500"}, 0.25, id="aws-answers"),
        pytest.param("aws", "UnauthorizedOperation", 0.7 * 0.354, id="not-allowed-table"),
        pytest.param("table", None, 0.7 * 0.354, id="table-only"),
    ],
)
def test_the_estimate_asks_aws_for_spot_prices_and_falls_back_to_the_table(
    monkeypatch: pytest.MonkeyPatch,
    ec2: tuple[Any, Stubber],
    source: str,
    answer: Any,
    expected: float,
) -> None:
    from windows_batch import cost_report
    from windows_batch import settings as settings_mod

    client, stub = ec2
    if isinstance(answer, dict):
        entry = {
            "AvailabilityZone": "us-east-1a",
            "InstanceType": "c5.xlarge",
            "ProductDescription": "Windows",
            "Timestamp": at(0),
            **answer,
        }
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [entry]})
    elif answer:
        stub.add_client_error("describe_spot_price_history", service_error_code=answer)
    monkeypatch.setattr(cost_report, "_client", lambda *_a, **_k: client)
    settings = settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__PURCHASE_OPTION": "spot",
            "AIRFLOW__WINDOWS_BATCH__PRICE_SOURCE": source,
        }
    )
    sizing = cost_report.plan_estimate(settings, task_s=[60.0] * 8, requested=2, slots=4)
    hours = sizing.chosen.instance_hours
    assert sizing.chosen.cost_usd == pytest.approx(hours * expected)
    assert ("Spot now" in sizing.line()) is (source == "aws" and isinstance(answer, dict))
