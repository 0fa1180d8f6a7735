"""The Results view's S3 reads under IAM as AWS enforces it (the moto ECS harness).

S3 answers a GetObject or HeadObject of a key that does not exist with 403, not 404, to a
caller without s3:ListBucket on the bucket, and a ListBucket allowed only under an s3:prefix
condition does not count for a read (S3 API reference, GetObject and HeadObject, Permissions;
tests/dags/moto_ecs_server.py models it). The view used to read results.json with a HEAD first:
every run without results.json yet answered 500 on AWS instead of "Still running".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from tests.conftest import REPO, load_module
from windows_batch_results.store import S3Store

from .test_results_app import DAG_ID, client_for, page_url

if TYPE_CHECKING:
    from .conftest import Airflow

ecs_harness = load_module("ecs_harness_view", REPO / "tests" / "dags" / "ecs_harness.py")
pytestmark = pytest.mark.airflow
# The role the view had: it may list and read the study's prefix only.
PREFIX_SCOPED = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::{bucket}/sim/*"},
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": ["sim/*"]}},
        },
    ],
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with ecs_harness.moto_ecs(tmp_path_factory.mktemp("view-iam")) as deployed:
        yield deployed


def _role_keys(deployment: Any, name: str, policy: dict[str, Any]) -> dict[str, str]:
    iam = deployment.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="view", PolicyDocument=json.dumps(policy))
    credentials = deployment.client("sts").assume_role(RoleArn=arn, RoleSessionName="view")[
        "Credentials"
    ]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def _use(monkeypatch: pytest.MonkeyPatch, deployment: Any, keys: dict[str, str]) -> None:
    connection = {"conn_type": "aws", "extra": {"endpoint_url": deployment.url}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("AWS_DEFAULT_REGION", ecs_harness.REGION)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in keys.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("role", ["prefix-scoped", "mwaa-execution-role"])
def test_a_run_without_results_yet_says_still_running_under_iam(
    airflow: Airflow, deployment: Any, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    bucket = deployment.outputs["storage"]["ResultsBucketName"]
    run_id = f"manual__no-results-yet-{role}"
    airflow.add_dag()
    airflow.add_run(
        run_id,
        state="running",
        location={
            "outputs": f"s3://{bucket}/sim/aggregate_results/{run_id}/",
            "engine": f"s3://{bucket}/sim/_engine/{run_id}/",
            "chunks": 4,
            "work_items": 4,
        },
    )
    admin = deployment.client("s3")
    admin.put_object(
        Bucket=bucket, Key=f"sim/_engine/{run_id}/chunks/done/00000-1.json", Body=b"{}"
    )
    if role == "prefix-scoped":
        policy = json.loads(json.dumps(PREFIX_SCOPED).replace("{bucket}", bucket))
        keys = _role_keys(deployment, f"view-{abs(hash(run_id))}", policy)
        # What S3 does, as the harness models it: a missing key is 403 for this role.
        s3 = boto3.client(
            "s3",
            endpoint_url=deployment.url,
            region_name=ecs_harness.REGION,
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=keys["AWS_SESSION_TOKEN"],
        )
        with pytest.raises(s3.exceptions.ClientError, match=r"403|Forbidden|AccessDenied"):
            s3.head_object(Bucket=bucket, Key=f"sim/aggregate_results/{run_id}/results.json")
    else:
        keys = {
            "AWS_ACCESS_KEY_ID": deployment.mwaa_keys["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": deployment.mwaa_keys["AWS_SECRET_ACCESS_KEY"],
            "AWS_SESSION_TOKEN": deployment.mwaa_keys["AWS_SESSION_TOKEN"],
        }
    _use(monkeypatch, deployment, keys)
    client = client_for(
        S3Store(aws_conn_id="aws_default", region=ecs_harness.REGION),
        airflow.token(role="viewer"),
        bucket=bucket,
    )
    answer = client.get(page_url(run_id, DAG_ID))
    assert answer.status_code == 200, answer.text
    assert "Still running. 1 of 4 work items done" in answer.text
    assert client.get(page_url(run_id) + "/files/results.json").status_code == 404


def test_with_list_bucket_a_missing_key_is_404(deployment: Any, tmp_path: Path) -> None:
    """The harness answers 404 to a caller who may list the bucket (the administrator)."""
    bucket = deployment.outputs["storage"]["ResultsBucketName"]
    del tmp_path
    s3 = deployment.client("s3")
    with pytest.raises(s3.exceptions.ClientError, match="404"):
        s3.head_object(Bucket=bucket, Key="sim/missing.json")
