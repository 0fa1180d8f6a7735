"""The ECS deployment the end-to-end tests run the DAG against: our stacks in a moto server.

`moto_ecs(tmp)` starts tests/dags/moto_ecs_server.py on a free 127.0.0.1 port, deploys the real
templates into it with CloudFormation, in the deployer's order and with its parameters
(storage, network, ecs, one study stack per study of `studies_dir`, then mwaa.yaml's execution
role: moto cannot create the AWS::MWAA::Environment, so only that resource is left out), assumes
the MWAA execution role, and
turns IAM enforcement on. From then on every call needs real credentials: the DAG's processes get
the execution role's (`airflow_env`), the containers their task role's (the server does that),
the test itself an administrator's (`client`). The DAG's settings are mwaa.yaml's
AirflowConfigurationOptions resolved with the parameters the mwaa stack got, i.e. what MWAA
would put into AIRFLOW__WINDOWS_BATCH__*. The server is stopped when the block exits.

Reusable: the standalone-Airflow fixture in conftest.py builds on it.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import decode_str

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
from windows_batch import catalog

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "cloudformation"
SERVER = Path(__file__).resolve().with_name("moto_ecs_server.py")
FAULTS_SERVER = SERVER.with_name("moto_ecs_faults.py")
"""The server with the faults some tests switch on (hung or reclaimed chunks, logs failing)."""
REGION = "us-east-1"
PREFIX = "wb"
MAX_INSTANCES = 3
WORKLOADS = REPO / "tests" / "workloads" / "studies"
"""The engine's own tiny test studies (no Octave): the default studies of a deployment."""
REPOSITORY = "123456789012.dkr.ecr.us-east-1.amazonaws.com/wb"
IMAGE_SUFFIX = "-linux-test"
"""A study's image is `<REPOSITORY>:<study><IMAGE_SUFFIX>`; the moto server runs docker/<study>/'s
Linux image's ENV (if the study has one) on the base image's entrypoint."""


def image_uri(study: str) -> str:
    return f"{REPOSITORY}:{study}{IMAGE_SUFFIX}"


def chunk_of(command: list[str]) -> int | None:
    """The chunk a container command runs (`run ... --chunk N`); None for the aggregate."""
    if command[:1] == ["run"] and "--chunk" in command:
        return int(command[command.index("--chunk") + 1])
    return None


_SETUP_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def _create(
    cloudformation: Any, stack: str, body: str, parameters: dict[str, str]
) -> dict[str, str]:
    cloudformation.create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    return _outputs(cloudformation, stack)


def mwaa_role_template() -> tuple[str, dict[str, Any]]:
    """mwaa.yaml without AWS::MWAA::Environment (JSON), and that environment's options."""
    template, matches = decode_str((TEMPLATES / "mwaa.yaml").read_text())
    assert not matches, matches
    environment = template["Resources"].pop("Environment")
    template["Outputs"] = {"ExecutionRoleArn": template["Outputs"]["ExecutionRoleArn"]}
    template.pop("Rules", None)
    return json.dumps(template), dict(environment["Properties"]["AirflowConfigurationOptions"])


def resolve_options(
    options: dict[str, Any], parameters: dict[str, str], stack: str
) -> dict[str, str]:
    """Airflow configuration options -> AIRFLOW__SECTION__KEY, with Refs resolved."""
    pseudo = {"AWS::Region": REGION, "AWS::StackName": stack}
    env = {}
    for name, value in options.items():
        ref = value["Ref"] if isinstance(value, dict) else None
        resolved = value if ref is None else pseudo.get(ref, parameters.get(ref))
        section, _, key = name.partition(".")
        env[f"AIRFLOW__{section.upper()}__{key.upper()}"] = str(resolved)
    return env


@dataclass
class EcsDeployment:
    """A running moto ECS server with our stacks; see the module docstring."""

    url: str
    events_path: Path
    iam_log_path: Path
    server_log: Path
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    admin_keys: dict[str, str] = field(default_factory=dict)
    mwaa_keys: dict[str, str] = field(default_factory=dict)
    studies_dir: Path = WORKLOADS

    def client(self, service: str) -> Any:
        """A boto3 client with administrator credentials (the test's own calls)."""
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, **self.admin_keys)

    def events(self, op: str | None = None) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        found = [json.loads(line) for line in self.events_path.read_text().splitlines()]
        return [e for e in found if op is None or e["op"] == op]

    def iam_decisions(self) -> list[dict[str, Any]]:
        if not self.iam_log_path.exists():
            return []
        return [json.loads(line) for line in self.iam_log_path.read_text().splitlines()]

    def role_policy(self, role: str, name: str) -> dict[str, Any]:
        """An inline policy of a role, parsed."""
        document = self.client("iam").get_role_policy(RoleName=role, PolicyName=name)
        text = document["PolicyDocument"]
        if isinstance(text, dict):
            return text
        try:
            return dict(json.loads(text))
        except ValueError:  # moto answers with the repr of a policy CloudFormation created
            return dict(ast.literal_eval(text))

    def role_name(self, stack: str, output: str) -> str:
        return self.outputs[stack][output].rsplit("/", maxsplit=1)[-1]

    @property
    def bucket(self) -> str:
        return self.outputs["storage"]["ResultsBucketName"]

    def desired_capacities(self) -> list[int]:
        """Every desired capacity set on the group, in order."""
        return [int(e["value"]) for e in self.events("set_desired_capacity")]

    def keys(self, prefix: str) -> list[str]:
        """The results bucket's keys under `prefix` (s3://bucket/... or a bare key prefix)."""
        prefix = prefix.removeprefix(f"s3://{self.bucket}/")
        pages = self.client("s3").get_paginator("list_objects_v2")
        return [
            o["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]

    def read(self, uri: str) -> bytes:
        """An object of the results bucket (s3://bucket/key or a bare key)."""
        key = uri.removeprefix(f"s3://{self.bucket}/")
        return bytes(self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def container_log(self, task_arn: str, study: str) -> list[str]:
        """What a task's container printed, from its awslogs stream `<study>/task/<task id>`."""
        stream = f"{study}/task/{task_arn.rsplit('/', maxsplit=1)[-1]}"
        events = self.client("logs").get_log_events(
            logGroupName=self.outputs["ecs"]["LogGroupName"],
            logStreamName=stream,
            startFromHead=True,
        )["events"]
        return [str(e["message"]) for e in events]

    def airflow_env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` plus what MWAA gives the DAG: its settings, the execution role's credentials."""
        env = {k: v for k, v in base.items() if not k.startswith("AIRFLOW__WINDOWS_BATCH__")}
        connection = {
            "conn_type": "aws",
            "extra": {"endpoint_url": self.url, "region_name": REGION},
        }
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        env.update(
            {
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
                "AWS_DEFAULT_REGION": REGION,
                **self.mwaa_keys,
                **self.settings,
            }
        )
        return env

    def containers(self, needle: str = "") -> list[dict[str, Any]]:
        """container_started events whose command contains `needle` (e.g. a run id)."""
        return [
            e
            for e in self.events("container_started")
            if not needle or any(needle in arg for arg in e["command"])
        ]

    def exited(self, task_arn: str) -> dict[str, Any] | None:
        """The container_exited event of a task, if its container has exited."""
        return next((e for e in self.events("container_exited") if e["task_arn"] == task_arn), None)

    def pause(self, container: dict[str, Any]) -> None:
        """Freeze a container's processes, as `docker pause` does (it costs no CPU meanwhile)."""
        with suppress(ProcessLookupError):  # it has exited already
            os.killpg(container["pid"], signal.SIGSTOP)

    def resume(self, container: dict[str, Any]) -> None:
        with suppress(ProcessLookupError):
            os.killpg(container["pid"], signal.SIGCONT)

    def wait_for(self, what: str, predicate: Any, *, timeout_s: float = 120) -> Any:
        """Poll `predicate()` until it returns something truthy; fail after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = predicate()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.2)


def _deploy(deployment: EcsDeployment, ecs_parameters: dict[str, str] | None = None) -> None:
    setup = {"endpoint_url": deployment.url, "region_name": REGION, **_SETUP_KEYS}
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="test-admin")
    iam.put_user_policy(
        UserName="test-admin", PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY)
    )
    key = iam.create_access_key(UserName="test-admin")["AccessKey"]
    deployment.admin_keys = {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }
    cloudformation = boto3.client("cloudformation", **setup)
    storage = _create(
        cloudformation, f"{PREFIX}-storage", (TEMPLATES / "storage.yaml").read_text(), {}
    )
    network = _create(
        cloudformation, f"{PREFIX}-network", (TEMPLATES / "network.yaml").read_text(), {}
    )
    ecs = _create(
        cloudformation,
        f"{PREFIX}-ecs",
        (TEMPLATES / "ecs.yaml").read_text(),
        {
            "MaxInstances": str(MAX_INSTANCES),
            "PrivateSubnetIds": network["PrivateSubnetIds"],
            "InstanceSecurityGroupId": network["EcsInstanceSecurityGroupId"],
            **(ecs_parameters or {}),
        },
    )
    family_prefix = f"{PREFIX}-study-"
    studies = {}
    for info in catalog.discover(deployment.studies_dir):
        studies[info.name] = _create(
            cloudformation,
            # A stack name takes letters, digits and '-' only (the deployer's rule); the family
            # and the role keep the study's name.
            info.task_family(family_prefix).replace("_", "-"),
            (TEMPLATES / "study.yaml").read_text(),
            {
                "StudyName": info.name,
                "TaskFamily": info.task_family(family_prefix),
                "ImageUri": image_uri(info.name),
                "TaskCpu": str(info.cpu),
                "TaskMemoryInMiB": str(info.memory_mib),
                "ResultsPrefix": info.results_prefix,
                "ResultsBucketName": storage["ResultsBucketName"],
                "LogGroupName": ecs["LogGroupName"],
                "TaskExecutionRoleArn": ecs["TaskExecutionRoleArn"],
            },
        )
    body, options = mwaa_role_template()
    mwaa_stack = f"{PREFIX}-mwaa"
    parameters = {
        "MwaaBucketName": storage["MwaaBucketName"],
        "RequirementsS3ObjectVersion": "1",
        "PrivateSubnetIds": network["PrivateSubnetIds"],
        "SecurityGroupId": network["MwaaSecurityGroupId"],
        "ResultsBucketName": storage["ResultsBucketName"],
        "ClusterName": ecs["ClusterName"],
        "AutoScalingGroupName": ecs["AutoScalingGroupName"],
        "TaskFamilyPrefix": family_prefix,
        "LogGroupName": ecs["LogGroupName"],
        "MaxClusterSize": str(MAX_INSTANCES),
        "InstanceTypes": ecs["InstanceTypes"],
        "ReservedMemoryInMiB": ecs["ReservedMemoryInMiB"],
        "PurchaseOption": ecs["PurchaseOption"],
        "OnDemandBaseCapacity": ecs["OnDemandBaseCapacity"],
        "TaskExecutionRoleArn": ecs["TaskExecutionRoleArn"],
        "WarmPoolSize": ecs["WarmPoolSize"],
        "RootVolumeSizeInGiB": ecs["RootVolumeSizeInGiB"],
    }
    mwaa = _create(cloudformation, mwaa_stack, body, parameters)
    deployment.outputs = {
        "storage": storage,
        "network": network,
        "ecs": ecs,
        "mwaa": mwaa,
        **{f"study:{name}": outputs for name, outputs in studies.items()},
    }
    # Parameters not passed take the template's defaults, as in CloudFormation.
    defaults = {
        name: str(spec["Default"])
        for name, spec in json.loads(body)["Parameters"].items()
        if "Default" in spec
    }
    deployment.settings = resolve_options(options, {**defaults, **parameters}, mwaa_stack)
    deployment.settings["AIRFLOW__WINDOWS_BATCH__STUDIES_DIR"] = str(deployment.studies_dir)
    credentials = boto3.client("sts", **setup).assume_role(
        RoleArn=mwaa["ExecutionRoleArn"], RoleSessionName="mwaa-worker", DurationSeconds=3600
    )["Credentials"]
    deployment.mwaa_keys = {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }
    # moto's own switch: from now on every request is authenticated and authorized.
    request = urllib.request.Request(  # noqa: S310 (the moto server on 127.0.0.1)
        f"{deployment.url}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 200


@contextmanager
def moto_ecs(
    tmp: Path,
    *,
    studies_dir: Path = WORKLOADS,
    server: Path | None = None,
    ecs_parameters: dict[str, str] | None = None,
    **server_env: str,
) -> Iterator[EcsDeployment]:
    """Start the server (`server`, by default SERVER; extra MOTO_* settings in `server_env`),
    deploy the ECS stack (with `ecs_parameters` as well) and a study stack for every study of
    `studies_dir`, yield; always stop it."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    deployment = EcsDeployment(
        url=f"http://127.0.0.1:{port}",
        events_path=tmp / f"events-{port}.jsonl",
        iam_log_path=tmp / f"iam-{port}.jsonl",
        server_log=tmp / f"moto-{port}.log",
        studies_dir=studies_dir,
    )
    env = {
        **os.environ,
        "MOTO_EVENT_LOG": str(deployment.events_path),
        "MOTO_IAM_LOG": str(deployment.iam_log_path),
        **server_env,
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "INITIAL_NO_AUTH_ACTION_COUNT"):
        env.pop(name, None)
    with deployment.server_log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(server or SERVER), str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "READY" not in deployment.server_log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"moto server did not start:\n{deployment.server_log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        _deploy(deployment, ecs_parameters)
        yield deployment
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
