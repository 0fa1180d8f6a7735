"""Stacks through change sets: previous values kept, ROLLBACK_COMPLETE recovered, failures named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from deployer.console import DeployError
from deployer.settings import Project
from deployer.stacks import TEMPLATE_BODY_MAX_BYTES, Stacks


def test_a_stack_left_in_rollback_complete_is_recreated_after_confirmation(deployer: Any) -> None:
    """A first create that fails leaves ROLLBACK_COMPLETE, which CloudFormation can only
    delete; the error names the resource that failed and CloudFormation's reason."""
    prefix = deployer.prefix()
    args = ("--prefix", prefix, "--skip", "ecs,studies,mwaa")
    ecr = deployer.client("ecr")
    ecr.create_repository(repositoryName=f"{prefix}/images")  # the image stack cannot create it
    failed = deployer.deploy(*args)
    assert failed.code == 1
    assert deployer.stacks(prefix)[f"{prefix}-image"] == "ROLLBACK_COMPLETE"
    assert f"==> Stack {prefix}-image: failed" in failed.out
    message = failed.err.splitlines()[-1]
    assert message.startswith(
        f"deploy.sh: error: stack {prefix}-image ended ROLLBACK_COMPLETE: "
        "Repository (AWS::ECR::Repository) CREATE_FAILED: "
    ), message
    assert "already exists" in message
    ecr.delete_repository(repositoryName=f"{prefix}/images")

    refused = deployer.deploy(*args, stdin="no\n")
    assert refused.code == 1
    assert f"{prefix}-image is in ROLLBACK_COMPLETE" in refused.err
    assert "Repository (AWS::ECR::Repository) CREATE_FAILED" in refused.err
    assert f"not confirmed; {prefix}-image left as it is" in refused.err
    assert deployer.stacks(prefix)[f"{prefix}-image"] == "ROLLBACK_COMPLETE"

    recreated = deployer.deploy(*args, "--yes")
    assert recreated.code == 0, recreated.text
    assert f"Deleting {prefix}-image (ROLLBACK_COMPLETE)" in recreated.out
    assert f"==> Stack {prefix}-image: created" in recreated.out
    assert deployer.stacks(prefix)[f"{prefix}-image"] == "CREATE_COMPLETE"


def test_a_parameter_not_passed_keeps_the_stacks_value(deployer: Any) -> None:
    """As `aws cloudformation deploy`: UsePreviousValue for a parameter the run does not
    pass, the template's default on a create."""
    prefix = deployer.prefix()
    ctx = deployer.context(prefix)
    stacks = Stacks(ctx)
    assert stacks.deploy("network", {"NatGatewayCount": "2"}) == "created"
    assert stacks.deploy("network", {}) == "no changes"

    def parameters() -> dict[str, str]:
        described = deployer.client("cloudformation").describe_stacks(StackName=f"{prefix}-network")
        return {
            p["ParameterKey"]: p["ParameterValue"] for p in described["Stacks"][0]["Parameters"]
        }

    assert parameters()["NatGatewayCount"] == "2"
    assert stacks.deploy("network", {"NatGatewayCount": "1"}) == "updated"
    assert parameters()["NatGatewayCount"] == "1"
    with pytest.raises(DeployError, match=r"network.yaml has no parameter Bogus"):
        stacks.deploy("network", {"Bogus": "1"})


def test_a_template_too_big_for_a_request_is_refused(deployer: Any, tmp_path: Path) -> None:
    """CreateChangeSet takes a TemplateBody of at most 51,200 bytes (CloudFormation quotas)."""
    (tmp_path / "cloudformation").mkdir()
    big = "Resources: {}\n" + "#" * TEMPLATE_BODY_MAX_BYTES
    (tmp_path / "cloudformation" / "big.yaml").write_text(big)
    ctx = deployer.context(deployer.prefix())
    ctx.project = Project(root=tmp_path)
    with pytest.raises(DeployError, match=r"at most 51200 bytes"):
        Stacks(ctx).deploy("big", {})


def _event(minute: int, logical: str, status: str, reason: str = "") -> dict[str, Any]:
    return {
        "StackId": "arn:stack",
        "EventId": f"e{minute}",
        "StackName": "s",
        "LogicalResourceId": logical,
        "ResourceType": "AWS::EC2::VPC" if logical != "s" else "AWS::CloudFormation::Stack",
        "Timestamp": datetime(2026, 1, 1, 0, minute, tzinfo=UTC),
        "ResourceStatus": status,
        "ResourceStatusReason": reason,
    }


def test_a_failure_names_the_first_resource_that_failed_not_the_ones_cancelled(
    deployer: Any,
) -> None:
    """CloudFormation lists events newest first; resources it stops because another failed
    say "Resource creation cancelled". The cause is the oldest failure after the operation
    began (CloudFormation User Guide, "Troubleshooting CloudFormation")."""
    ctx = deployer.context("s")
    stacks = Stacks(ctx)
    events = [
        _event(9, "s", "ROLLBACK_COMPLETE"),
        _event(8, "Subnet", "CREATE_FAILED", "Resource creation cancelled"),
        _event(7, "Vpc", "CREATE_FAILED", "The CIDR '10.0.0.0/8' is invalid."),
        _event(6, "s", "CREATE_IN_PROGRESS"),
        _event(1, "Old", "UPDATE_FAILED", "an earlier operation"),
    ]
    with Stubber(stacks.cloudformation) as stub:
        stub.add_response(
            "describe_stacks",
            {"Stacks": [{"StackName": "s", "StackStatus": "ROLLBACK_COMPLETE",
                         "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)}]},
        )  # fmt: skip
        stub.add_response("describe_stack_events", {"StackEvents": events})
        message = stacks.failure("s", since=datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert message == (
        "stack s ended ROLLBACK_COMPLETE: Vpc (AWS::EC2::VPC) CREATE_FAILED: "
        "The CIDR '10.0.0.0/8' is invalid."
    )
