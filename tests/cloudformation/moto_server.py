"""A moto server that behaves like AWS where deploy.sh relies on it, and a way to run one.

`aws cloudformation deploy` drives CloudFormation through change sets. moto 5.2.5 differs from
AWS there in three ways this module corrects, in the server process only:

- CreateChangeSet for an unchanged stack raises "No updates are to be performed." (UpdateStack's
  error); AWS creates a FAILED change set ("The submitted information didn't contain changes"),
  which is what `--no-fail-on-empty-changeset` handles. Unchanged parameters passed back as
  UsePreviousValue are compared after normalisation (moto keeps numbers and lists parsed), and
  an SSM-typed parameter passed back that way keeps its resolved value (moto would look the
  resolved AMI ID up as a parameter name and fail).
- A stack created or updated by executing a change set keeps its old (empty) outputs and never
  registers its exports (deleting it then fails with a KeyError).
- `AWS::S3::Bucket` ignores `VersioningConfiguration` (the MWAA bucket must be versioned).
- Deleting a stack leaves its route tables, NAT gateways, gateway endpoints, internet gateway and
  flow logs in place (their models cannot be deleted through CloudFormation), so its VPC cannot
  be deleted. Deleting the VPC here first deletes what CloudFormation would have deleted before.

It also seeds the public SSM parameter of the ECS-optimized Windows Server 2022 AMI, which AWS
publishes and moto does not know. Run as `python moto_server.py --port N`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WINDOWS_AMI_PARAMETER = (
    "/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-ECS_Optimized/image_id"
)
FAKE_WINDOWS_AMI_ID = "ami-0a1b2c3d4e5f67890"
ACCOUNT_ID = "123456789012"


def seed_windows_ami(region: str, account_id: str = ACCOUNT_ID) -> None:
    """Put AWS's public Windows ECS AMI parameter into moto's SSM (the API refuses /aws names)."""
    from moto.core.utils import utcnow
    from moto.ssm.models import Parameter, ssm_backends

    parameters = ssm_backends[account_id][region]._parameters
    if parameters.get(WINDOWS_AMI_PARAMETER):
        return
    parameters[WINDOWS_AMI_PARAMETER].append(
        Parameter(
            account_id=account_id,
            name=WINDOWS_AMI_PARAMETER,
            value=FAKE_WINDOWS_AMI_ID,
            parameter_type="String",
            description=None,
            allowed_pattern=None,
            keyid=None,
            last_modified_date=utcnow(),
            version=1,
            data_type="aws:ec2:image",
        )
    )


def _normalise(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def apply_patches() -> None:
    """Make moto behave like AWS in the ways the module docstring lists."""
    _patch_change_sets()
    _patch_bucket_versioning()
    _patch_vpc_deletion()


def _patch_change_sets() -> None:
    from moto.cloudformation.models import CloudFormationBackend, Stack
    from moto.cloudformation.parsing import ResourceMap
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.ssm.models import ssm_backends

    create_change_set = CloudFormationResponse.create_change_set

    def create_change_set_like_aws(self: Any) -> Any:
        # The backend marks an unchanged change set FAILED, as AWS does; skip the early raise.
        self._validate_different_update = lambda *_args, **_kwargs: None
        return create_change_set(self)

    def has_parameters(self: Any, other_parameters: dict[str, Any]) -> bool:
        current = self.resource_map.resolved_parameters
        return all(
            key in current and _normalise(current[key]) == _normalise(value)
            for key, value in other_parameters.items()
        )

    execute_change_set = CloudFormationBackend.execute_change_set

    def execute_and_refresh_outputs(
        self: Any, change_set_name: str, stack_name: str | None = None
    ) -> None:
        execute_change_set(self, change_set_name=change_set_name, stack_name=stack_name)
        change_set = self.describe_change_set(change_set_name)
        stack = self.stacks[change_set.stack_id]
        stack._parse_template()
        stack.output_map = stack._create_output_map()
        for name in [
            name
            for name, export in self.exports.items()
            if export.exporting_stack_id == stack.stack_id
        ]:
            del self.exports[name]
        for export in stack.exports:
            self.exports[export.name] = export

    parse_ssm_parameter = ResourceMap.parse_ssm_parameter

    def parse_or_keep_resolved(self: Any, value: str, value_type: str) -> Any:
        if ssm_backends[self._account_id][self._region_name].get_parameter(value) is None:
            return value
        return parse_ssm_parameter(self, value, value_type)

    ResourceMap.parse_ssm_parameter = parse_or_keep_resolved  # type: ignore[method-assign]
    CloudFormationResponse.create_change_set = create_change_set_like_aws  # type: ignore[method-assign]
    Stack.has_parameters = has_parameters  # type: ignore[method-assign]
    CloudFormationBackend.execute_change_set = execute_and_refresh_outputs  # type: ignore[method-assign]


def _patch_bucket_versioning() -> None:
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    create_bucket = FakeBucket.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_bucket_with_versioning(
        cls: Any,
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        bucket = create_bucket(
            cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
        )
        status = (
            cloudformation_json.get("Properties", {})
            .get("VersioningConfiguration", {})
            .get("Status")
        )
        if status:
            backend = s3_backends[account_id][get_partition(region_name)]
            backend.put_bucket_versioning(bucket.name, status)
        return bucket

    FakeBucket.create_from_cloudformation_json = classmethod(create_bucket_with_versioning)  # type: ignore[method-assign,assignment]


def _patch_vpc_deletion() -> None:
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.vpcs import VPC

    delete_vpc = VPC.delete_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def delete_vpc_after_its_resources(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        backend = ec2_backends[account_id][region_name]
        vpc_id = resource_name
        if backend.describe_subnets(filters={"vpc-id": vpc_id}):
            # Subnets go first; moto's own delete refuses, and the stack deletion retries later.
            delete_vpc(cls, resource_name, cloudformation_json, account_id, region_name)
        for nat in list(backend.nat_gateways.values()):
            if nat.vpc_id == vpc_id:
                backend.delete_nat_gateway(nat.id)
                backend.nat_gateways.pop(nat.id)
        for endpoint in list(backend.vpc_end_points.values()):
            if endpoint.vpc_id == vpc_id:
                backend.delete_vpc_endpoints([endpoint.id])
        for flow_log in list(backend.flow_logs.values()):
            if flow_log.resource_id == vpc_id:
                backend.delete_flow_logs([flow_log.id])
        for gateway in backend.describe_internet_gateways(filters={"attachment.vpc-id": vpc_id}):
            backend.detach_internet_gateway(gateway.id, vpc_id)
            backend.delete_internet_gateway(gateway.id)
        for table in backend.describe_route_tables(filters={"vpc-id": vpc_id}):
            if table.main_association_id is None:
                table._associations.clear()
                backend.delete_route_table(table.id)
        for eni in list(backend.enis.values()):
            if eni.subnet.vpc_id == vpc_id:
                backend.delete_network_interface(eni.id)
        delete_vpc(cls, resource_name, cloudformation_json, account_id, region_name)

    VPC.delete_from_cloudformation_json = classmethod(delete_vpc_after_its_resources)  # type: ignore[method-assign,assignment]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(log_path: Path, region: str = "us-east-1") -> Iterator[str]:
    """Run this module as a moto server on a free port; yield its URL; stop it in any case."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port), "--region", region],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {log_path.read_text()}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    apply_patches()
    seed_windows_ami(args.region)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
