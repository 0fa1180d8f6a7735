"""A lease in S3 that one deploy run holds while it builds an image.

Taken with a conditional write (PutObject If-None-Match: *) and released with a conditional
delete (DeleteObject If-Match: <our ETag>), so two runs, on any machines, cannot both hold it
and a run never removes another's lease (S3 User Guide, "How to prevent object overwrites with
conditional writes" and "How to perform conditional deletes"). A lease past its expiry belongs
to a run that died: it is taken over with PutObject If-Match: <its ETag>, which only one of
several waiting runs can win. The expiry is set past the holder's own deadlines, so a live
holder has always given up before its lease can be taken.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from deployer.aws import error_code
from deployer.console import Console, DeployError

# S3 answers a lost conditional write with 412 PreconditionFailed, and a conditional write
# racing another on the same key with 409 ConditionalRequestConflict (retry it).
LOST = ("PreconditionFailed", "412")
CONFLICT = ("ConditionalRequestConflict", "409")


@dataclass(frozen=True)
class Holder:
    run: str
    by: str
    host: str
    started: str
    expires_epoch_s: float

    def describe(self) -> str:
        return f"deploy run {self.run} ({self.by} on {self.host}, since {self.started})"


@dataclass
class Lease:
    s3: Any
    bucket: str
    key: str
    etag: str
    holder: Holder

    def release(self, console: Console) -> None:
        """Deletes the lease if it is still ours (a conditional delete)."""
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except ClientError as error:
            if error_code(error) not in LOST and error_code(error) not in ("NoSuchKey", "404"):
                raise
            console.warn(f"the lease s3://{self.bucket}/{self.key} was no longer ours")


def _read(s3: Any, bucket: str, key: str) -> tuple[Holder, str] | None:
    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            return None
        raise
    return Holder(**json.loads(answer["Body"].read())), str(answer["ETag"])


def acquire(
    s3: Any,
    *,
    bucket: str,
    key: str,
    run: str,
    by: str,
    lease_s: float,
    wait_s: float,
    poll_s: float,
    console: Console,
) -> Lease:
    """Takes the lease, waiting up to `wait_s` for another run's to be released or expire."""
    started_s = console.clock()
    last_progress_s = started_s
    while True:
        holder = Holder(
            run=run,
            by=by,
            host=f"{socket.gethostname()} pid {os.getpid()}",
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            expires_epoch_s=time.time() + lease_s,
        )
        body = json.dumps(holder.__dict__).encode()
        try:
            written = s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            return Lease(s3=s3, bucket=bucket, key=key, etag=written["ETag"], holder=holder)
        except ClientError as error:
            if error_code(error) in CONFLICT:
                continue
            if error_code(error) not in LOST:
                raise
        current = _read(s3, bucket, key)
        if current is None:
            continue
        other, etag = current
        if other.expires_epoch_s < time.time():
            try:
                written = s3.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag)
            except ClientError as error:
                if error_code(error) in LOST or error_code(error) in CONFLICT:
                    continue
                raise
            console.warn(f"took over the expired lease of {other.describe()}")
            return Lease(s3=s3, bucket=bucket, key=key, etag=written["ETag"], holder=holder)
        if console.clock() - started_s >= wait_s:
            raise DeployError(
                f"{other.describe()} still holds s3://{bucket}/{key} after {wait_s:.0f} s; "
                "wait for it to finish, then run again"
            )
        if (
            console.clock() - last_progress_s >= console.progress_every_s
            or last_progress_s == started_s
        ):
            console.progress(
                f"waiting for {other.describe()}, which is building", since_s=started_s
            )
            last_progress_s = console.clock()
        time.sleep(poll_s)
