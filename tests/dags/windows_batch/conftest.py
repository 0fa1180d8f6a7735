"""botocore Stubber clients for the engine's unit tests (no server, no network)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber


def stubbed(service: str) -> Iterator[tuple[Any, Stubber]]:
    """A `service` client with its Stubber; every queued answer must have been asked for."""
    session = boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    client: Any = session.client(service)  # type: ignore[call-overload]
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def ecs() -> Iterator[tuple[Any, Stubber]]:
    yield from stubbed("ecs")


@pytest.fixture
def autoscaling() -> Iterator[tuple[Any, Stubber]]:
    yield from stubbed("autoscaling")


@pytest.fixture
def ec2() -> Iterator[tuple[Any, Stubber]]:
    yield from stubbed("ec2")
