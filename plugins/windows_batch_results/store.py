"""Reading a run's results where the run wrote them: a local folder, or S3 through S3Hook."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from windows_batch_results.locate import LocationError, S3Prefix

log = logging.getLogger(__name__)


class ResultsStore(Protocol):
    """Read-only access to the objects of the results bucket(s)."""

    def read(self, prefix: S3Prefix, name: str) -> bytes | None:
        """The object `name` directly under `prefix`, or None if it does not exist."""
        ...

    def count_json(self, prefix: S3Prefix) -> int:
        """How many `.json` objects lie under `prefix` (task results written so far)."""
        ...


class LocalStore:
    """The local backend: `s3://bucket/key` is the file `<root>/bucket/key`."""

    def __init__(self, *, root: Path) -> None:
        """:param root: the directory standing in for S3 (one sub-directory per bucket)."""
        self.root = root.resolve()

    def _dir(self, prefix: S3Prefix) -> Path:
        directory = prefix.local_dir(self.root).resolve()
        # Symbolic links included: whatever the prefix resolves to must stay under the root.
        if not directory.is_relative_to(self.root):
            raise LocationError(f"{prefix.uri} resolves outside {self.root}")
        return directory

    def read(self, prefix: S3Prefix, name: str) -> bytes | None:
        directory = self._dir(prefix)
        path = (directory / name).resolve()
        if path.parent != directory:
            raise LocationError(f"{name!r} is not directly under {prefix.uri}")
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def count_json(self, prefix: S3Prefix) -> int:
        directory = self._dir(prefix)
        if not directory.is_dir():
            return 0
        return sum(1 for p in directory.rglob("*.json") if p.is_file())


class S3Store:
    """AWS: objects read through the Amazon provider's S3Hook (the connection's credentials)."""

    def __init__(self, *, aws_conn_id: str, region: str | None) -> None:
        """:param aws_conn_id: Airflow connection for AWS; :param region: its region override."""
        self.aws_conn_id = aws_conn_id
        self.region = region

    def _hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: PLC0415

        return S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region)

    def read(self, prefix: S3Prefix, name: str) -> bytes | None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        key = prefix.child(name)
        try:
            obj = self._hook().get_key(key, bucket_name=prefix.bucket)
            return bytes(obj.get()["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise

    def count_json(self, prefix: S3Prefix) -> int:
        keys = self._hook().list_keys(bucket_name=prefix.bucket, prefix=prefix.key)
        return sum(1 for key in keys or [] if key.endswith(".json"))
