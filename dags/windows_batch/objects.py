"""The engine's reads and writes of the run's objects: S3 on AWS, a folder locally.

plan_tasks writes the manifest, the fan-out checks the task runner's records, the aggregate
reads a study's published outputs. On the ECS backend through the Amazon provider's S3 hook
(the `aws_default` connection, adaptive retries); on the local backend `s3://bucket/key` is the
file `<LOCAL_ROOT>/bucket/key`, every path confined to that root.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from windows_batch.settings import Settings

READ_THREADS = 16


class ObjectError(ValueError):
    """A URI the engine refuses (not s3://, or a key that climbs out of the local root)."""


def split(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ObjectError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ObjectError(f"no bucket in {uri!r}")
    return bucket, key


def local_path(uri: str, root: Path) -> Path:
    """Where the local backend keeps `s3://bucket/key`: `<root>/bucket/key`, inside the root."""
    bucket, key = split(uri)
    if any(part in {".", ".."} for part in [bucket, *key.split("/")]):
        raise ObjectError(f"{uri!r} has a '.' or '..' part")
    base = root.resolve()
    path = (base / bucket / key).resolve()
    if path != base and not path.is_relative_to(base):
        raise ObjectError(f"{uri!r} resolves outside {base}")
    return path


class Objects:
    """Read, write and list the run's objects (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    @property
    def local(self) -> bool:
        return self.settings.local

    @property
    def s3(self) -> Any:
        if self._client is None:
            from windows_batch.cluster import aws_client  # noqa: PLC0415

            self._client = aws_client(self.settings, "s3")
        return self._client

    def path(self, uri: str) -> Path:
        return local_path(uri, self.settings.local_root)

    def write(self, uri: str, data: bytes, *, content_type: str = "application/json") -> None:
        """Write the object whole (atomically: locally a temporary file, then a rename)."""
        if self.local:
            path = self.path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".wb-tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            return
        bucket, key = split(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def read(self, uri: str) -> bytes | None:
        """The object's bytes, or None if it does not exist.

        S3: a listing first, not a HEAD: with a prefix-scoped s3:ListBucket, S3 answers a HEAD
        (or a GET) of a missing key with 403 Access Denied, not 404 (S3 API reference,
        GetObject: "If you don't have the s3:ListBucket permission, Amazon S3 returns an HTTP
        status code 403 Access Denied error").
        """
        if self.local:
            try:
                return self.path(uri).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
        bucket, key = split(uri)
        listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        if not any(item.get("Key") == key for item in listed.get("Contents", [])):
            return None
        return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def read_many(self, uris: Iterable[str]) -> list[bytes | None]:
        """Several objects, read concurrently on S3 (a missing one is None)."""
        wanted = list(uris)
        if self.local or len(wanted) <= 1:
            return [self.read(u) for u in wanted]

        def one(uri: str) -> bytes | None:
            bucket, key = split(uri)
            try:
                return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in {"NoSuchKey", "404", "NotFound"}:
                    return None
                raise

        _ = self.s3
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(wanted))) as pool:
            return list(pool.map(one, wanted))

    def list(self, prefix: str, *, recursive: bool = True) -> list[tuple[str, int]]:
        """(name relative to the folder `prefix`, size) of the objects under it, sorted."""
        if self.local:
            root = self.path(prefix)
            if not root.is_dir():
                return []
            walk = root.rglob("*") if recursive else root.iterdir()
            return sorted(
                (p.relative_to(root).as_posix(), p.stat().st_size)
                for p in walk
                if p.is_file() and not p.name.startswith(".wb-tmp-")
            )
        bucket, key = split(prefix)
        key = key.rstrip("/") + "/" if key.strip("/") else ""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
        if not recursive:
            kwargs["Delimiter"] = "/"
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                name = str(item["Key"])[len(key) :]
                if name and not name.endswith("/"):
                    found.append((name, int(item["Size"])))
        return sorted(found)

    def upload_tree(self, folder: Path, prefix: str) -> int:
        """Copy a local folder's files under `prefix` (the study's bundle); the bytes sent."""
        total = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder)
            if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                continue
            data = path.read_bytes()
            total += len(data)
            self.write(
                prefix.rstrip("/") + "/" + relative.as_posix(),
                data,
                content_type="application/octet-stream",
            )
        return total
