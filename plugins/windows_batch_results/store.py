"""Reading a run's files where the run wrote them: a local folder, or S3 through S3Hook.

S3 reads never start with a HEAD request: with a prefix-scoped s3:ListBucket, S3 answers a
HEAD (or GET) of a key that does not exist with 403 Access Denied, not 404 ("If you don't have
the s3:ListBucket permission, Amazon S3 returns an HTTP status code 403 Access Denied error",
S3 API reference, HeadObject and GetObject). A listing under the key decides whether it exists;
only then is it read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from windows_batch_results.locate import LocationError, S3Prefix

log = logging.getLogger(__name__)
READ_THREADS = 16


@dataclass(frozen=True)
class Listing:
    """Some of the files under a prefix: (relative name, size), the count and bytes of all."""

    files: list[tuple[str, int]]
    total: int
    total_bytes: int


class ResultsStore(Protocol):
    """Read-only access to the objects of the results bucket."""

    def read(self, prefix: S3Prefix, name: str) -> bytes | None:
        """The object `name` (a relative path) under `prefix`, or None if it does not exist."""
        ...

    def read_many(self, prefix: S3Prefix, names: Iterable[str]) -> list[bytes | None]:
        """Several objects under `prefix` (concurrently on S3)."""
        ...

    def list(self, prefix: S3Prefix, *, limit: int, recursive: bool = True) -> Listing:
        """The first `limit` files under `prefix` (sorted), and how many there are in all."""
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
        path = (directory / prefix.child(name)[len(prefix.key) :]).resolve()
        if not path.is_relative_to(directory):
            raise LocationError(f"{name!r} is not under {prefix.uri}")
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def read_many(self, prefix: S3Prefix, names: Iterable[str]) -> list[bytes | None]:
        return [self.read(prefix, name) for name in names]

    def list(self, prefix: S3Prefix, *, limit: int, recursive: bool = True) -> Listing:
        directory = self._dir(prefix)
        if not directory.is_dir():
            return Listing(files=[], total=0, total_bytes=0)
        walk = directory.rglob("*") if recursive else directory.iterdir()
        found = sorted(
            (p.relative_to(directory).as_posix(), p.stat().st_size)
            for p in walk
            if p.is_file() and not p.name.startswith(".wb-tmp-")
        )
        return Listing(files=found[:limit], total=len(found), total_bytes=sum(s for _, s in found))


class S3Store:
    """AWS: objects read through the Amazon provider's S3Hook (the connection's credentials)."""

    def __init__(self, *, aws_conn_id: str, region: str | None) -> None:
        """:param aws_conn_id: Airflow connection for AWS; :param region: its region override."""
        self.aws_conn_id = aws_conn_id
        self.region = region
        self._client: Any = None

    @property
    def s3(self) -> Any:
        if self._client is None:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: PLC0415

            self._client = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region).conn
        return self._client

    def read(self, prefix: S3Prefix, name: str) -> bytes | None:
        key = prefix.child(name)
        listed = self.s3.list_objects_v2(Bucket=prefix.bucket, Prefix=key, MaxKeys=1)
        if not any(item.get("Key") == key for item in listed.get("Contents", [])):
            return None
        return bytes(self.s3.get_object(Bucket=prefix.bucket, Key=key)["Body"].read())

    def read_many(self, prefix: S3Prefix, names: Iterable[str]) -> list[bytes | None]:
        """Objects known to exist (listed): GETs only, several at a time."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        wanted = list(names)

        def one(name: str) -> bytes | None:
            try:
                body = self.s3.get_object(Bucket=prefix.bucket, Key=prefix.child(name))["Body"]
                return bytes(body.read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                    return None
                raise

        if len(wanted) <= 1:
            return [one(n) for n in wanted]
        _ = self.s3
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(wanted))) as pool:
            return list(pool.map(one, wanted))

    def list(self, prefix: S3Prefix, *, limit: int, recursive: bool = True) -> Listing:
        kwargs: dict[str, Any] = {"Bucket": prefix.bucket, "Prefix": prefix.key}
        if not recursive:
            kwargs["Delimiter"] = "/"
        files: list[tuple[str, int]] = []
        total = total_bytes = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if key.endswith("/"):
                    continue
                total += 1
                total_bytes += int(item.get("Size", 0))
                if len(files) < limit:
                    files.append((key[len(prefix.key) :], int(item.get("Size", 0))))
        return Listing(files=sorted(files), total=total, total_bytes=total_bytes)
