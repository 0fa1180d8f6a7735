"""boto3 in the chosen region: clients with botocore's retries, the caller, and long waits.

Clients use botocore's `standard` retry mode: it retries throttling (Throttling,
RequestLimitExceeded, ...) and transient 5xx errors with capped exponential backoff, which the
default `legacy` mode only partly does (boto3 guide, "Retries").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError, WaiterError

from deployer.console import Console, DeployError

RETRIES = Config(retries={"mode": "standard", "max_attempts": 10})
# MWAA's API puts "api." before the endpoint's host; a test's http://127.0.0.1:PORT has none.
LOCAL_ENDPOINT = RETRIES.merge(Config(inject_host_prefix=False))


@dataclass
class Aws:
    """One region's clients; `endpoint_url` points them at a moto server in tests."""

    session: boto3.Session
    region: str
    endpoint_url: str | None = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
            self._clients[service] = self.session.client(
                service,  # type: ignore[call-overload]
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=LOCAL_ENDPOINT if endpoint else RETRIES,
            )
        return self._clients[service]

    def in_region(self, region: str) -> Aws:
        return Aws(session=self.session, region=region, endpoint_url=self.endpoint_url)


@dataclass(frozen=True)
class Caller:
    arn: str
    account: str


def resolve_region(region: str | None, session: boto3.Session) -> str:
    """--region, else AWS_REGION, AWS_DEFAULT_REGION or the profile's (as the AWS CLI)."""
    resolved = region or os.environ.get("AWS_REGION") or session.region_name
    if not resolved:
        raise DeployError(
            "no AWS region set; pass --region (for example --region us-east-1) or run "
            "'aws configure set region us-east-1'"
        )
    return resolved


def connect(*, region: str | None, session: boto3.Session | None = None) -> tuple[Aws, Caller]:
    """The region's clients and who we are; stops with a clear message without credentials."""
    session = session or boto3.Session()
    aws = Aws(session=session, region=resolve_region(region, session))
    return aws, caller(aws)


def caller(aws: Aws) -> Caller:
    try:
        identity = aws.client("sts").get_caller_identity()
    except (ClientError, NoCredentialsError) as error:
        raise DeployError(
            f"AWS credentials are missing or invalid (sts get-caller-identity failed: {error}); "
            "run 'aws configure' or 'aws sso login'"
        ) from error
    return Caller(arn=identity["Arn"], account=identity["Account"])


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def wait(
    client: Any,
    waiter_name: str,
    *,
    delay_s: float,
    timeout_s: float,
    console: Console,
    progress: Callable[[], str],
    **kwargs: Any,
) -> None:
    """A boto3 waiter with our own deadline and a progress line every `progress_every_s`.

    The waiter runs in slices of attempts: a slice that ends with "Max attempts exceeded" while
    the deadline is not reached prints `progress()` and goes on. Any other WaiterError (a failure
    state: ROLLBACK_COMPLETE, ...) is raised at once.
    """
    waiter = client.get_waiter(waiter_name)
    started_s = console.clock()
    attempts_per_slice = max(1, int(console.progress_every_s / max(delay_s, 0.001)))
    while True:
        try:
            waiter.wait(
                **kwargs, WaiterConfig={"Delay": delay_s, "MaxAttempts": attempts_per_slice}
            )
            return
        except WaiterError as error:
            if "Max attempts exceeded" not in str(error.kwargs.get("reason", "")):
                raise
            if console.clock() - started_s >= timeout_s:
                raise
            console.progress(progress(), since_s=started_s)
