"""ecs.yaml's mixed-instances group (on-demand or Spot), its agent settings, what the DAG is told.

AWS's rules encoded here:
- MixedInstancesPolicy (AWS::AutoScaling::AutoScalingGroup): a group takes either LaunchTemplate
  or MixedInstancesPolicy; InstancesDistribution's OnDemandAllocationStrategy `prioritized`
  launches on-demand instances in the order of the LaunchTemplate Overrides (first = highest);
  OnDemandBaseCapacity instances are on-demand first, and OnDemandPercentageAboveBaseCapacity of
  the rest (100 = all on-demand, 0 = all Spot); SpotAllocationStrategy `price-capacity-optimized`
  (AWS's recommended one) picks the pools least likely to be interrupted at the lowest price.
- Capacity Rebalancing: with it "Amazon EC2 Auto Scaling attempts to launch a Spot Instance
  whenever Amazon EC2 notifies that a Spot Instance is at an elevated risk of interruption. After
  launching a new instance, it then terminates an old instance"; AWS advises several instance
  types and Availability Zones for it.
- ECS Spot Instance draining (Windows container instances): with
  ECS_ENABLE_SPOT_INSTANCE_DRAINING=true the agent puts the instance in DRAINING on the two-minute
  interruption notice (off by default); Windows agent settings are machine environment
  variables set before Initialize-ECSAgent.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path
from typing import Any

import boto3
import moto_server  # loaded by tests/conftest.py
import pytest
from moto.autoscaling.models import FakeAutoScalingGroup
from moto.ec2.models.instance_types import INSTANCE_TYPES

REPO = Path(__file__).resolve().parents[2]
# The DAG's own settings readers (MWAA puts dags/ on sys.path; tests/dags/conftest.py does too).
if str(REPO / "dags") not in sys.path:
    sys.path.insert(0, str(REPO / "dags"))
from windows_batch import capacity, catalog, cost, settings  # noqa: E402

from ..conftest import load_module  # noqa: E402
from .test_templates import REGION, TEMPLATES, aws, create_stack, load  # noqa: E402, F401  (aws: fixture)

TYPE_PARAMETERS = ("InstanceType", "InstanceType2", "InstanceType3", "InstanceType4")
# deploy.sh's planning figure: Windows reports about 95 % of the nominal memory.
REPORTED_MEMORY_PERCENT = 95

ecs_harness = load_module("ecs_harness_spot", REPO / "tests" / "dags" / "ecs_harness.py")


_NO_VALUE = object()


def resolve(  # noqa: PLR0911 (one return per intrinsic function)
    node: Any, parameters: dict[str, Any], conditions: dict[str, Any]
) -> Any:
    """The value CloudFormation gives `node` for these parameters (Ref, Fn::If, Fn::Equals,
    Fn::Not, Condition; AWS::NoValue leaves the key or list item out)."""

    def condition(name: str) -> bool:
        return bool(resolve(conditions[name], parameters, conditions))

    if isinstance(node, list):
        items = [resolve(item, parameters, conditions) for item in node]
        return [item for item in items if item is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return _NO_VALUE if node["Ref"] == "AWS::NoValue" else parameters.get(node["Ref"], node)
    if set(node) == {"Fn::If"}:
        name, yes, no = node["Fn::If"]
        return resolve(yes if condition(name) else no, parameters, conditions)
    if set(node) == {"Fn::Equals"}:
        left, right = (resolve(x, parameters, conditions) for x in node["Fn::Equals"])
        return str(left) == str(right)
    if set(node) == {"Fn::Not"}:
        return not resolve(node["Fn::Not"][0], parameters, conditions)
    if set(node) == {"Condition"}:
        return condition(node["Condition"])
    resolved = {key: resolve(value, parameters, conditions) for key, value in node.items()}
    return {key: value for key, value in resolved.items() if value is not _NO_VALUE}


def group_properties(**overrides: Any) -> dict[str, Any]:
    """The Auto Scaling group's properties for the template's defaults plus `overrides`."""
    template = load("ecs")
    parameters = {n: p["Default"] for n, p in template["Parameters"].items() if "Default" in p}
    parameters.update(overrides)
    group = template["Resources"]["AutoScalingGroup"]["Properties"]
    return dict(resolve(group, parameters, template["Conditions"]))


def test_the_group_launches_from_a_mixed_instances_policy_one_override_per_type() -> None:
    group = group_properties()
    # LaunchTemplate and MixedInstancesPolicy exclude each other.
    assert "LaunchTemplate" not in group
    policy = group["MixedInstancesPolicy"]
    assert policy["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateId"] == {
        "Ref": "LaunchTemplate"
    }
    parameters = load("ecs")["Parameters"]
    defaults = [parameters[name]["Default"] for name in TYPE_PARAMETERS]
    assert policy["LaunchTemplate"]["Overrides"] == [{"InstanceType": t} for t in defaults]
    distribution = policy["InstancesDistribution"]
    assert distribution["SpotAllocationStrategy"] == "price-capacity-optimized"
    assert distribution["OnDemandAllocationStrategy"] == "prioritized"
    # Empty type parameters leave their override out (AWS::NoValue), keeping the order.
    fewer = group_properties(
        InstanceType="m5.xlarge", InstanceType2="", InstanceType3="c5.xlarge", InstanceType4=""
    )
    overrides = fewer["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    assert overrides == [{"InstanceType": "m5.xlarge"}, {"InstanceType": "c5.xlarge"}]


@pytest.mark.parametrize(
    ("purchase", "base", "expected_base", "above_base", "rebalance"),
    [
        pytest.param("on-demand", 2, 0, 100, False, id="on-demand-is-100-percent-on-demand"),
        pytest.param("spot", 0, 0, 0, True, id="spot"),
        pytest.param("spot", 2, 2, 0, True, id="spot-above-an-on-demand-base"),
    ],
)
def test_purchase_option_sets_the_distribution_and_capacity_rebalancing(
    purchase: str, base: int, expected_base: int, above_base: int, rebalance: bool
) -> None:
    group = group_properties(PurchaseOption=purchase, OnDemandBaseCapacity=base)
    distribution = group["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["OnDemandBaseCapacity"] == expected_base
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == above_base
    assert group["CapacityRebalance"] is rebalance
    if rebalance:  # AWS: use several instance types and Availability Zones with it
        assert len(group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]) >= 2
        assert group["VPCZoneIdentifier"] == {"Ref": "PrivateSubnetIds"}


def dag_env(ecs_outputs: dict[str, str]) -> dict[str, str]:
    """AIRFLOW__WINDOWS_BATCH__* as MWAA sets them: mwaa.yaml's options with these parameters
    (the ECS stack's outputs, as deploy.sh passes them) over the template's defaults."""
    mwaa = load("mwaa")
    parameters = {n: str(p["Default"]) for n, p in mwaa["Parameters"].items() if "Default" in p}
    options = mwaa["Resources"]["Environment"]["Properties"]["AirflowConfigurationOptions"]
    env = ecs_harness.resolve_options(options, {**parameters, **ecs_outputs}, "t-mwaa")
    return {k: v for k, v in env.items() if v != "None"}


def slots_on(instance_type: str, *, cpu: int, memory_mib: int, reserved_mib: int) -> int:
    """Tasks of this size that fit on one instance, from moto's copy of EC2's
    DescribeInstanceTypes data (registered memory: what Windows reports, taken as 95 %, less
    what the agent keeps back)."""
    info = INSTANCE_TYPES[instance_type]
    registered_mib = info["MemoryInfo"]["SizeInMiB"] * REPORTED_MEMORY_PERCENT // 100 - reserved_mib
    by_cpu = info["VCpuInfo"]["DefaultVCpus"] * 1024 // cpu
    return int(min(by_cpu, registered_mib // memory_mib))


def test_every_default_type_is_one_x86_64_size_and_the_dag_sizes_each_study_on_the_smallest() -> (
    None
):
    parameters = load("ecs")["Parameters"]
    types = [parameters[name]["Default"] for name in TYPE_PARAMETERS]
    assert len(set(types)) == len(types) == 4
    for instance_type in types:
        info = INSTANCE_TYPES[instance_type]
        assert "x86_64" in info["ProcessorInfo"]["SupportedArchitectures"], instance_type
        assert info["VCpuInfo"]["DefaultVCpus"] == 4, instance_type
        # The engine's own table (used when InstanceSizes is empty) agrees with EC2's data.
        assert capacity.KNOWN_SIZES[instance_type] == capacity.InstanceSize(
            info["VCpuInfo"]["DefaultVCpus"], info["MemoryInfo"]["SizeInMiB"]
        ), instance_type
    reserved = int(parameters["ReservedMemoryInMiB"]["Default"])
    # What the DAG plans with on AWS: the ECS stack's outputs through mwaa.yaml's options.
    env = dag_env(
        {
            "InstanceTypes": ",".join(types),
            "ReservedMemoryInMiB": str(reserved),
            "InstanceSizes": ",".join(
                f"{t}={INSTANCE_TYPES[t]['VCpuInfo']['DefaultVCpus']}/"
                f"{INSTANCE_TYPES[t]['MemoryInfo']['SizeInMiB']}"
                for t in types
            ),
        }
    )
    dag_settings = settings.load(env)
    for info in catalog.discover(REPO / "dags" / "studies"):
        on_each = [
            slots_on(t, cpu=info.cpu, memory_mib=info.memory_mib, reserved_mib=reserved)
            for t in types
        ]
        assert min(on_each) >= 1, info.name  # every shipped study runs on every default type
        found = capacity.slots_for(dag_settings, cpu=info.cpu, memory_mib=info.memory_mib)
        assert found == min(on_each), info.name


def test_user_data_turns_spot_draining_on_before_the_agent_starts() -> None:
    sub = load("ecs")["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"][
        "UserData"
    ]["Fn::Base64"]["Fn::Sub"]
    user_data = sub if isinstance(sub, str) else sub[0]
    initialize = user_data.index("Initialize-ECSAgent")
    machine = dict(
        re.findall(
            r'SetEnvironmentVariable\("(\w+)", "([^"]*)", "Machine"\)', user_data[:initialize]
        )
    )
    assert machine["ECS_ENABLE_SPOT_INSTANCE_DRAINING"] == "true"


def test_the_dags_cost_model_is_told_what_the_group_launches() -> None:
    """mwaa.yaml's options from the ECS stack's outputs reach cost.py's settings."""
    outputs = {
        "InstanceTypes": "c6i.xlarge,c5a.xlarge",
        "PurchaseOption": "spot",
        "OnDemandBaseCapacity": "2",
        "ReservedMemoryInMiB": "2048",
    }
    mwaa_parameters = load("mwaa")["Parameters"]
    for name, value in outputs.items():
        pattern = mwaa_parameters[name].get("AllowedPattern")
        assert pattern is None or re.fullmatch(pattern, value), name
        assert name in load("ecs")["Outputs"], name
    table = cost.load_cost_settings(dag_env(outputs), backend="ecs")
    assert table.instance_types == ("c6i.xlarge", "c5a.xlarge")
    assert table.purchase_option == "spot"
    assert table.on_demand_base == 2


@pytest.fixture
def spot_aws(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    """test_templates' moto, its groups created as CloudFormation creates them: NoValue items
    left out and CapacityRebalance kept (moto does neither)."""
    monkeypatch.setattr(
        FakeAutoScalingGroup,
        "create_from_cloudformation_json",
        moto_server.mixed_instances_group_patch(),
    )
    return aws


def test_a_spot_stack_with_two_types_deploys_in_moto(spot_aws: Any) -> None:
    network = create_stack(spot_aws, "network", "s-network")
    ecs = create_stack(
        spot_aws,
        "ecs",
        "s-ecs",
        PrivateSubnetIds=network["PrivateSubnetIds"],
        InstanceSecurityGroupId=network["EcsInstanceSecurityGroupId"],
        InstanceType="c6i.xlarge",
        InstanceType2="c5.xlarge",
        InstanceType3="",
        InstanceType4="",
        PurchaseOption="spot",
        OnDemandBaseCapacity="1",
    )
    assert (ecs["InstanceTypes"], ecs["PurchaseOption"], ecs["OnDemandBaseCapacity"]) == (
        "c6i.xlarge,c5.xlarge",
        "spot",
        "1",
    )
    group = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs["AutoScalingGroupName"]]
    )["AutoScalingGroups"][0]
    assert group["CapacityRebalance"] is True
    policy = group["MixedInstancesPolicy"]
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == [
        "c6i.xlarge",
        "c5.xlarge",
    ]
    distribution = policy["InstancesDistribution"]
    assert distribution["SpotAllocationStrategy"] == "price-capacity-optimized"
    assert distribution["OnDemandBaseCapacity"] == 1
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0
    template_id = policy["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateId"]
    data = boto3.client("ec2", region_name=REGION).describe_launch_template_versions(
        LaunchTemplateId=template_id
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    user_data = base64.b64decode(data["UserData"]).decode()
    assert '"ECS_ENABLE_SPOT_INSTANCE_DRAINING", "true", "Machine"' in user_data
