"""CloudFormation stacks: create or update through a change set, read outputs, delete.

A deploy works as `aws cloudformation deploy --no-fail-on-empty-changeset` did: one change set
per run (CREATE for a new stack, UPDATE otherwise), a template parameter that is not passed
keeps the stack's previous value (UsePreviousValue) or takes the template's default on a
create, and an empty change set ("The submitted information didn't contain changes") is
success with no change. On top of that: a stack left in ROLLBACK_COMPLETE is deleted after
confirmation (CloudFormation can only delete such a stack), and a failure names the resource
that failed and CloudFormation's reason, from the stack's events.

Sceptre 4.7 (a stack graph with output resolvers) was read and not taken: its pins (jsonschema
<3.3, networkx <2.7, packaging <25, colorama <0.4.4) cannot live with Airflow's constraints in
.venv, its `launch` deletes a ROLLBACK_COMPLETE stack without asking and updates without change
sets, its waits poll every 4 s fixed, and our graph is a line with work between the stacks
(a build, a bake, uploads whose versions MWAA takes) that its hooks would scatter.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError, WaiterError

from deployer.aws import wait
from deployer.console import DeployError
from deployer.settings import PROJECT_TAG, Context

# CreateChangeSet's TemplateBody is at most 51,200 bytes (CloudFormation API reference,
# CreateChangeSet); a larger template must go through S3 (TemplateURL).
TEMPLATE_BODY_MAX_BYTES = 51_200
# CreateChangeSet's StatusReason for an empty change set (the AWS CLI matches both).
EMPTY_CHANGE_SET_REASONS = (
    "The submitted information didn't contain changes",
    "No updates are to be performed",
)
# Resources CloudFormation stops because another one failed: not the cause.
CANCELLED_REASONS = ("Resource creation cancelled", "Resource update cancelled")


class _IgnoreTags(yaml.SafeLoader):
    """Reads a template's structure; CloudFormation's short-form tags (!Ref, !Sub) become None."""


_IgnoreTags.add_multi_constructor("!", lambda _loader, _suffix, _node: None)


def read_template(path: Path) -> dict[str, Any]:
    """A template's structure (its intrinsic functions read as None)."""
    return yaml.load(path.read_text(), Loader=_IgnoreTags) or {}  # noqa: S506 (a SafeLoader)


def template_parameters(path: Path) -> list[str]:
    """The template's parameter names, in its order."""
    return list(read_template(path).get("Parameters") or {})


def _does_not_exist(error: ClientError) -> bool:
    return "does not exist" in str(error.response.get("Error", {}).get("Message", ""))


class Stacks:
    """The deployment's stacks; outputs are read once per stack and run."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cloudformation = ctx.aws.client("cloudformation")
        self._outputs: dict[str, dict[str, str]] = {}

    def describe(self, stack: str) -> dict[str, Any] | None:
        try:
            described = self.cloudformation.describe_stacks(StackName=stack)["Stacks"]
        except ClientError as error:
            if _does_not_exist(error):
                return None
            raise
        return described[0] if described else None

    def status(self, stack: str) -> str:
        """The stack's status, or NONE when it does not exist."""
        described = self.describe(stack)
        return "NONE" if described is None else str(described["StackStatus"])

    def listed(self) -> list[dict[str, Any]]:
        """Every live stack whose name starts with this prefix (one paginated listing); other
        deployments' stacks may be among them (prefix `wb` lists `wb-x-*`)."""
        return [
            stack
            for page in self.cloudformation.get_paginator("describe_stacks").paginate()
            for stack in page["Stacks"]
            if stack["StackName"].startswith(f"{self.ctx.prefix}-")
        ]

    def statuses(self) -> dict[str, str]:
        """Every live stack of this prefix and its status."""
        return {stack["StackName"]: stack["StackStatus"] for stack in self.listed()}

    def outputs(self, stack: str) -> dict[str, str]:
        if stack not in self._outputs:
            described = self.describe(stack)
            if described is None:
                raise DeployError(f"cannot read stack {stack}; deploy it first (without --skip)")
            self._remember(stack, described)
        return self._outputs[stack]

    def output(self, stack: str, key: str) -> str:
        value = self.outputs(stack).get(key)
        if not value:
            raise DeployError(f"stack {stack} has no output {key}")
        return value

    def optional_output(self, stack: str, key: str) -> str | None:
        """The output, or None when the stack or the output does not exist."""
        try:
            return self.outputs(stack).get(key) or None
        except DeployError:
            return None

    def forget(self, stack: str) -> None:
        self._outputs.pop(stack, None)

    def _remember(self, stack: str, described: Mapping[str, Any]) -> None:
        self._outputs[stack] = {
            output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])
        }

    def deploy(
        self,
        layer: str,
        parameters: Mapping[str, str],
        *,
        stack: str | None = None,
        timeout_s: float | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Creates or updates the layer's stack (`stack` names another stack of the layer's
        template); returns created, updated or no changes."""
        stack = stack or self.ctx.stack_name(layer)
        template = self.ctx.project.template(layer)
        body = template.read_text()
        if len(body.encode()) > TEMPLATE_BODY_MAX_BYTES:
            raise DeployError(
                f"{template} is {len(body.encode())} bytes; CloudFormation takes a template body "
                f"of at most {TEMPLATE_BODY_MAX_BYTES} bytes"
            )
        with self.ctx.console.step(f"Stack {stack}") as step:
            current = self._recover_rolled_back(stack, self.describe(stack))
            exists = current is not None and current["StackStatus"] != "REVIEW_IN_PROGRESS"
            change_set_type = "UPDATE" if exists else "CREATE"
            change_set = self.cloudformation.create_change_set(
                StackName=stack,
                ChangeSetName=f"deploy-{uuid.uuid4().hex}",
                ChangeSetType=change_set_type,
                TemplateBody=body,
                Parameters=self._parameters(
                    template, parameters, current if exists else None, stack=stack
                ),
                Capabilities=["CAPABILITY_NAMED_IAM"],
                Tags=[PROJECT_TAG]
                + [{"Key": key, "Value": value} for key, value in (tags or {}).items()],
                Description=f"Created by {self.ctx.console.program}",
            )["Id"]
            if not self._change_set_ready(stack, change_set):
                self.cloudformation.delete_change_set(ChangeSetName=change_set, StackName=stack)
                assert current is not None  # only an update can be empty
                self._remember(stack, current)
                step.result = "no changes"
                return step.result
            since = self.cloudformation.describe_change_set(
                ChangeSetName=change_set, StackName=stack
            )["CreationTime"]
            self.forget(stack)
            self.cloudformation.execute_change_set(ChangeSetName=change_set, StackName=stack)
            waiter = "stack_update_complete" if exists else "stack_create_complete"
            try:
                wait(
                    self.cloudformation,
                    waiter,
                    delay_s=self.ctx.timing.stack_poll_s,
                    timeout_s=timeout_s or self.ctx.timing.stack_timeout_s,
                    console=self.ctx.console,
                    progress=lambda: self._progress(stack),
                    StackName=stack,
                )
            except WaiterError as error:
                raise DeployError(self.failure(stack, since=since, error=error)) from error
            self.outputs(stack)
            step.result = "updated" if exists else "created"
            return step.result

    def _parameters(
        self,
        template: Path,
        overrides: Mapping[str, str],
        current: Mapping[str, Any] | None,
        *,
        stack: str,
    ) -> list[dict[str, Any]]:
        names = template_parameters(template)
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise DeployError(f"{template.name} has no parameter {', '.join(unknown)} ({stack})")
        previous = {p["ParameterKey"] for p in (current or {}).get("Parameters", [])}
        parameters: list[dict[str, Any]] = []
        for name in names:
            if name in overrides:
                parameters.append({"ParameterKey": name, "ParameterValue": overrides[name]})
            elif name in previous:
                parameters.append({"ParameterKey": name, "UsePreviousValue": True})
        return parameters

    def _change_set_ready(self, stack: str, change_set: str) -> bool:
        """Waits for the change set; False when it is empty, DeployError when it failed."""
        try:
            wait(
                self.cloudformation,
                "change_set_create_complete",
                delay_s=self.ctx.timing.change_set_poll_s,
                timeout_s=self.ctx.timing.stack_timeout_s,
                console=self.ctx.console,
                progress=lambda: f"{stack}: change set still being created",
                ChangeSetName=change_set,
                StackName=stack,
            )
        except WaiterError as error:
            described = self.cloudformation.describe_change_set(
                ChangeSetName=change_set, StackName=stack
            )
            reason = str(described.get("StatusReason", ""))
            if described["Status"] == "FAILED" and any(
                empty in reason for empty in EMPTY_CHANGE_SET_REASONS
            ):
                return False
            raise DeployError(
                f"stack {stack}: CloudFormation refused the change set: {reason or error}"
            ) from error
        return True

    def _progress(self, stack: str) -> str:
        events = self.cloudformation.describe_stack_events(StackName=stack)["StackEvents"]
        latest = next(
            (e for e in events if e["LogicalResourceId"] != stack), events[0] if events else None
        )
        status = self.status(stack)
        if latest is None:
            return f"{stack}: {status}"
        return f"{stack}: {status}, latest {latest['LogicalResourceId']} {latest['ResourceStatus']}"

    def failure(self, stack: str, *, since: datetime | None, error: Exception | None = None) -> str:
        """What failed: the first failed resource since `since`, its type and the reason."""
        status = self.status(stack)
        failed: list[dict[str, Any]] = []
        if status != "NONE":
            for page in self.cloudformation.get_paginator("describe_stack_events").paginate(
                StackName=stack
            ):
                for event in page["StackEvents"]:
                    if since is not None and event["Timestamp"] < since:
                        break
                    reason = str(event.get("ResourceStatusReason", ""))
                    if event["ResourceStatus"].endswith("_FAILED") and not any(
                        cancelled in reason for cancelled in CANCELLED_REASONS
                    ):
                        failed.append(event)
                else:
                    continue
                break
        if not failed:
            detail = f" ({error})" if error and status == "NONE" else ""
            return (
                f"stack {stack} ended {status}{detail}; "
                "its events in the CloudFormation console say why"
            )
        cause = failed[-1]  # events come newest first: the last failure listed came first
        others = (
            f" ({len(failed) - 1} more failed event(s) in the stack's events)"
            if len(failed) > 1
            else ""
        )
        return (
            f"stack {stack} ended {status}: {cause['LogicalResourceId']} "
            f"({cause['ResourceType']}) {cause['ResourceStatus']}: "
            f"{cause.get('ResourceStatusReason', 'no reason given')}{others}"
        )

    def _recover_rolled_back(
        self, stack: str, current: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """A stack whose first create failed can only be deleted: asks, deletes it, returns None."""
        if current is None or current["StackStatus"] != "ROLLBACK_COMPLETE":
            return current
        console = self.ctx.console
        console.error(
            f"stack {stack} is in ROLLBACK_COMPLETE: its first create failed and it can only be "
            f"deleted and created again; {self.failure(stack, since=None)}"
        )
        if not console.confirm(f"Delete {stack} (it holds no resources) and create it again?"):
            raise DeployError(
                f"not confirmed; {stack} left as it is (re-run with --yes, or delete it yourself)"
            )
        console.info(f"Deleting {stack} (ROLLBACK_COMPLETE)")
        self.delete(stack)
        return None

    def delete(self, stack: str) -> None:
        """Deletes the stack and waits until it is gone (our deadline, not the waiter's hour)."""
        self.forget(stack)
        described = self.describe(stack)
        if described is None:
            return
        self.cloudformation.delete_stack(StackName=stack)
        try:
            wait(
                self.cloudformation,
                "stack_delete_complete",
                delay_s=self.ctx.timing.destroy_poll_s,
                timeout_s=self.ctx.timing.stack_timeout_s,
                console=self.ctx.console,
                progress=lambda: self._progress(stack),
                # By name: once deleted, the stack "does not exist", which the waiter accepts.
                StackName=stack,
            )
        except WaiterError as error:
            if "Max attempts exceeded" in str(error.kwargs.get("reason", "")):
                raise DeployError(
                    f"{stack} is still {self.status(stack)} after "
                    f"{self.ctx.timing.stack_timeout_s:.0f} s; run again later"
                ) from error
            raise DeployError(
                self.failure(stack, since=described.get("LastUpdatedTime"), error=error)
            ) from error
