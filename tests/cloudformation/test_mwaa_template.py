"""The MWAA template: least-privilege execution role and the settings the DAG reads.

moto cannot create AWS::MWAA::Environment, so the template is read (cfn-lint's decoder) and the
execution role's statements are checked one by one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str

from ..conftest import load_module

code_calls = load_module("code_calls", Path(__file__).resolve().with_name("code_calls.py"))

TEMPLATE = Path(__file__).resolve().parents[2] / "cloudformation" / "mwaa.yaml"

# Actions AWS offers no resource-level permission for, so they need Resource "*"; a required
# condition key narrows the ones that support one.
RESOURCE_STAR_ALLOWED: dict[str, str | None] = {
    "s3:GetAccountPublicAccessBlock": None,  # an account-level setting, no resource type
    "logs:DescribeLogGroups": None,  # no resource type in the service authorization reference
    "cloudwatch:PutMetricData": None,  # no resource type
    "autoscaling:DescribeAutoScalingGroups": None,  # Describe* take no resource
    "autoscaling:DescribeScalingActivities": None,  # Describe* take no resource
    "autoscaling:DescribeWarmPool": None,  # Describe* take no resource
    "ec2:DescribeInstances": None,  # EC2 Describe* take no resource
    "ec2:DescribeSpotPriceHistory": None,  # EC2 Describe* take no resource
    "ecs:ListTasks": "ecs:cluster",  # takes no cluster ARN as resource: pinned by condition
}
# Partial wildcards: only the read-only set the MWAA user guide documents for the environment's
# own bucket (and the KMS data-key family for the Celery queues).
PARTIAL_WILDCARDS_ALLOWED = {"s3:GetObject*", "s3:GetBucket*", "s3:List*", "kms:GenerateDataKey*"}
# What an environment needs whatever its DAGs do: the MWAA User Guide, "Amazon MWAA execution
# role" (its sample policy for an AWS owned key; docs.aws.amazon.com/mwaa/latest/userguide/
# mwaa-create-role.html). Any other action must be one the code calls (code_calls.py).
MWAA_DOCUMENTED = frozenset(
    {
        "airflow:PublishMetrics",
        "s3:GetObject*",
        "s3:GetBucket*",
        "s3:List*",
        "s3:GetAccountPublicAccessBlock",
        "logs:CreateLogStream",
        "logs:CreateLogGroup",
        "logs:PutLogEvents",
        "logs:GetLogEvents",
        "logs:GetLogRecord",
        "logs:GetLogGroupFields",
        "logs:GetQueryResults",
        "logs:DescribeLogGroups",
        "cloudwatch:PutMetricData",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:GenerateDataKey*",
        "kms:Encrypt",
    }
)

# Contract 3 (COMMON.md): what the DAG reads as AIRFLOW__WINDOWS_BATCH__<KEY>.
DAG_SETTINGS = {
    "backend": "ecs",
    "aws_conn_id": "aws_default",
    "region": {"Ref": "AWS::Region"},
    "cluster_name": {"Ref": "ClusterName"},
    "asg_name": {"Ref": "AutoScalingGroupName"},
    "task_family_prefix": {"Ref": "TaskFamilyPrefix"},
    "log_group": {"Ref": "LogGroupName"},
    "s3_bucket": {"Ref": "ResultsBucketName"},
    "max_cluster_size": {"Ref": "MaxClusterSize"},
    "instance_types": {"Ref": "InstanceTypes"},
    "instance_sizes": {"Ref": "InstanceSizes"},
    "reserved_memory_mib": {"Ref": "ReservedMemoryInMiB"},
    "purchase_option": {"Ref": "PurchaseOption"},
    "on_demand_base": {"Ref": "OnDemandBaseCapacity"},
    "run_note": "mwaa",
    "mwaa_environment": {"Ref": "AWS::StackName"},
    "boot_s": {"Ref": "InstanceBootSeconds"},
    "pull_s": {"Ref": "ImagePullSeconds"},
    "warm_pool_size": {"Ref": "WarmPoolSize"},
    "root_volume_gib": {"Ref": "RootVolumeSizeInGiB"},
}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode_str(TEMPLATE.read_text())
    assert not matches, matches
    return decoded


@pytest.fixture(scope="module")
def statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"]["ExecutionRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    return [
        statement
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def statement_for(statements: list[dict[str, Any]], action: str) -> dict[str, Any]:
    found = [s for s in statements if s["Effect"] == "Allow" and action in as_list(s["Action"])]
    assert len(found) == 1, action
    return found[0]


def test_no_action_is_a_wildcard(statements: list[dict[str, Any]]) -> None:
    for statement in statements:
        assert "NotAction" not in statement
        for action in as_list(statement["Action"]):
            assert action != "*"
            assert not action.endswith(":*"), action
            if "*" in action:
                assert action in PARTIAL_WILDCARDS_ALLOWED, action


def test_resource_star_only_where_aws_has_no_resource_level_permission(
    statements: list[dict[str, Any]],
) -> None:
    for statement in statements:
        if statement.get("Resource") != "*" and "*" not in as_list(statement.get("Resource")):
            continue
        for action in as_list(statement["Action"]):
            assert action in RESOURCE_STAR_ALLOWED, f"{action} on Resource '*'"
            condition_key = RESOURCE_STAR_ALLOWED[action]
            if condition_key:
                conditions = {k for block in statement["Condition"].values() for k in block}
                assert condition_key in conditions, action


def test_kms_only_outside_this_account_and_through_sqs(statements: list[dict[str, Any]]) -> None:
    kms = statement_for(statements, "kms:Decrypt")
    assert "Resource" not in kms
    assert kms["NotResource"] == {"Fn::Sub": "arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"}
    assert kms["Condition"]["StringLike"]["kms:ViaService"] == [
        {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}
    ]


def test_ecs_permissions_are_pinned_to_our_families_and_cluster(
    statements: list[dict[str, Any]],
) -> None:
    cluster_arn = {
        "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}"
        ":cluster/${ClusterName}"
    }
    run = statement_for(statements, "ecs:RunTask")
    assert run["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}"
        ":task-definition/${TaskFamilyPrefix}*:*"
    }
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": cluster_arn}}
    tasks = {
        "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}"
        ":task/${ClusterName}/*"
    }
    assert statement_for(statements, "ecs:StopTask")["Resource"] == tasks
    assert statement_for(statements, "ecs:DescribeTasks")["Resource"] == tasks
    assert statement_for(statements, "ecs:ListTasks")["Condition"] == {
        "ArnEquals": {"ecs:cluster": cluster_arn}
    }
    assert statement_for(statements, "ecs:ListContainerInstances")["Resource"] == cluster_arn
    assert statement_for(statements, "ecs:DescribeContainerInstances")["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}"
        ":container-instance/${ClusterName}/*"
    }


def test_scaling_only_our_group_and_passing_only_our_roles(
    statements: list[dict[str, Any]],
) -> None:
    group = {
        "Fn::Sub": "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}"
        ":autoScalingGroup:*:autoScalingGroupName/${AutoScalingGroupName}"
    }
    assert statement_for(statements, "autoscaling:SetDesiredCapacity")["Resource"] == group
    passing = statement_for(statements, "iam:PassRole")
    # The studies' task roles are named after their stacks: <TaskFamilyPrefix><study>.
    assert passing["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${TaskFamilyPrefix}*"},
        {"Ref": "TaskExecutionRoleArn"},
    ]
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    by_sid = {statement.get("Sid"): statement for statement in statements}
    assert (
        ":log-group:airflow-${AWS::StackName}-*"
        in by_sid["WriteAirflowLogs"]["Resource"]["Fn::Sub"]
    )
    task_logs = by_sid["ReadTaskLogs"]
    assert as_list(task_logs["Action"]) == ["logs:GetLogEvents"]
    assert all(":log-group:${LogGroupName}" in r["Fn::Sub"] for r in task_logs["Resource"])


def test_the_role_grants_only_what_mwaa_documents_or_the_code_calls(
    statements: list[dict[str, Any]],
) -> None:
    """Issue 17 point 5: UpdateAutoScalingGroup (which could raise MinSize and defeat scale-in
    and the idle alarm) was granted and never called; so were other actions. Any DAG on the
    environment may use what the role grants, so it grants nothing the code does not need."""
    called = code_calls.called_actions()
    granted = {
        action
        for statement in statements
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }
    assert sorted(granted - MWAA_DOCUMENTED - called) == []


def test_the_code_calls_are_found_where_the_dag_makes_them() -> None:
    """code_calls.py finds the DAG's own boto3 calls and the provider operator's."""
    called = code_calls.called_actions()
    # cluster.py (SetDesiredCapacity, the container-instance paginator), cost.py (waiter-free
    # paginators), ecs.py's own ListTasks/StopTask, the provider's RunTask, its tasks_stopped
    # waiter (DescribeTasks) and log fetcher (GetLogEvents), the MWAA hook's InvokeRestApi, the
    # S3 listing (s3:ListBucket) and reads (s3:GetObject).
    assert {
        "autoscaling:SetDesiredCapacity",
        "autoscaling:DescribeAutoScalingGroups",
        "ecs:ListContainerInstances",
        "ecs:DescribeContainerInstances",
        "ec2:DescribeSpotPriceHistory",
        "ecs:ListTasks",
        "ecs:StopTask",
        "ecs:RunTask",
        "iam:PassRole",
        "ecs:DescribeTasks",
        "logs:GetLogEvents",
        "airflow:InvokeRestApi",
        "s3:ListBucket",
        "s3:GetObject",
    } <= called
    assert "autoscaling:UpdateAutoScalingGroup" not in called


def test_execution_role_trusts_mwaa_only(template: dict[str, Any]) -> None:
    trust = template["Resources"]["ExecutionRole"]["Properties"]["AssumeRolePolicyDocument"]
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": ["airflow.amazonaws.com", "airflow-env.amazonaws.com"]},
            "Action": "sts:AssumeRole",
        }
    ]


def test_environment_pins_airflow_and_sets_the_dag_settings(template: dict[str, Any]) -> None:
    environment = template["Resources"]["Environment"]["Properties"]
    assert environment["AirflowVersion"] == "3.3.1"
    assert environment["DagS3Path"] == "dags"
    assert environment["RequirementsS3Path"] == {"Ref": "RequirementsS3Path"}
    assert environment["RequirementsS3ObjectVersion"] == {"Ref": "RequirementsS3ObjectVersion"}
    assert environment["WebserverAccessMode"] == {"Ref": "WebserverAccessMode"}
    assert template["Parameters"]["WebserverAccessMode"]["AllowedValues"] == [
        "PUBLIC_ONLY",
        "PRIVATE_ONLY",
    ]
    options = environment["AirflowConfigurationOptions"]
    settings = {
        key.removeprefix("windows_batch."): value
        for key, value in options.items()
        if key.startswith("windows_batch.")
    }
    assert settings == DAG_SETTINGS
    for key in options:
        section, option = key.split(".")
        assert section
        assert option == option.lower()


def test_requirements_pin_the_airflow_constraints_and_add_the_engine_s_own() -> None:
    lines = [
        line.strip()
        for line in (TEMPLATE.parents[1] / "requirements-mwaa.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == [
        '--constraint "https://raw.githubusercontent.com/apache/airflow/'
        'constraints-3.3.1/constraints-3.12.txt"',
        # Not in MWAA's image: pinned exactly, as in requirements.txt.
        "openjd-model==0.14.0",
        # In Airflow's constraints (the line above pins it).
        "scipy",
    ]
    local = (TEMPLATE.parents[1] / "requirements.txt").read_text()
    assert "openjd-model==0.14.0" in local.splitlines()


def resolve(value: Any, template: dict[str, Any], parameters: dict[str, Any]) -> Any:
    """Evaluate Ref, Fn::If and Fn::Equals the way CloudFormation does, for the given parameters."""
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), *_ = value.items()
        if function == "Ref":
            return parameters.get(argument, template["Parameters"][argument].get("Default"))
        if function == "Fn::Equals":
            left, right = (resolve(item, template, parameters) for item in argument)
            return str(left) == str(right)
        if function == "Fn::If":
            condition, when_true, when_false = argument
            chosen = resolve(template["Conditions"][condition], template, parameters)
            return resolve(when_true if chosen else when_false, template, parameters)
    return value


@pytest.mark.parametrize(
    ("environment_class", "expected"),
    [
        # MWAA user guide (environment class): mw1.micro runs one scheduler and one worker.
        pytest.param("mw1.micro", (1, 1, 1), id="micro"),
        pytest.param("mw1.small", (2, 1, 2), id="small-defaults"),
        pytest.param("mw1.large", (2, 1, 2), id="large-defaults"),
    ],
)
def test_schedulers_and_workers_are_what_the_environment_class_takes(
    template: dict[str, Any], environment_class: str, expected: tuple[int, int, int]
) -> None:
    environment = template["Resources"]["Environment"]["Properties"]
    parameters = {"EnvironmentClass": environment_class}
    sizing = tuple(
        int(resolve(environment[key], template, parameters))
        for key in ("Schedulers", "MinWorkers", "MaxWorkers")
    )
    assert sizing == expected
    # Any class but mw1.micro takes 2 to 5 schedulers: the parameter cannot ask for fewer.
    schedulers = template["Parameters"]["Schedulers"]
    assert (schedulers["MinValue"], schedulers["MaxValue"]) == (2, 5)
