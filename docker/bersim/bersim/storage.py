"""Where results live: `s3://bucket/key` through boto3, or a local path that behaves like S3 keys.

- Writes are atomic. Local: a temporary file in the same folder, then `os.replace`; S3: one
  PutObject of bytes built completely beforehand. A failure never leaves a partial file.
- A prefix is a folder: `s3://b/sim/run1` lists the keys under `sim/run1/` (never `sim/run10/`),
  recursively, as S3 lists them; a local prefix is the directory, walked recursively.
- S3 uses the standard credential chain; boto3 itself honours `AWS_ENDPOINT_URL`(`_S3`),
  `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE` (default here: "standard").
- A bucket that does not exist or a malformed URI is bad input (exit 2); an endpoint that cannot
  be reached, missing credentials or access denied are runtime failures (exit 1).
"""

from __future__ import annotations

import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bersim.errors import BersimError, RuntimeFailure, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MAX_KEY_BYTES = 1024
_LIST_PAGE_SIZE = 1000
"""Keys per ListObjectsV2 page (the S3 maximum)."""
_READ_THREADS = 16
"""Parallel GETs when reading many small objects (one task result each)."""

CONTENT_TYPES = {".json": "application/json", ".csv": "text/csv", ".png": "image/png"}


@dataclass(frozen=True)
class Location:
    """One object or prefix: `scheme` "s3" (bucket, key) or "file" (key is the local path).

    label: how messages name it, e.g. "--output s3://b/k".
    """

    scheme: Literal["s3", "file"]
    bucket: str
    key: str
    label: str = field(default="", compare=False)

    @property
    def uri(self) -> str:
        """The location written back as a URI (S3) or path (local)."""
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else self.key

    def child(self, name: str) -> Location:
        """The object `name` under this prefix (a relative key, '/'-separated)."""
        if self.scheme == "s3":
            key = f"{self.key.rstrip('/')}/{name}" if self.key.strip("/") else name
            return Location("s3", self.bucket, key, label=f"s3://{self.bucket}/{key}")
        path = str(Path(self.key) / name)
        return Location("file", "", path, label=path)

    def __str__(self) -> str:
        return self.uri


def parse_uri(text: str, *, option: str, is_prefix: bool) -> Location:
    """Parse an --input/--output value; raise UsageError naming `option` when it is malformed.

    Accepts `s3://bucket/key`, `file:///abs/path` and plain local paths (a Windows drive
    letter such as `C:\\results` is a path, not a scheme). An object needs a key that does not
    end in '/'; a prefix may be a whole bucket.
    """
    label = f"{option} {text}"
    if not text or text != text.strip():
        raise UsageError(f"{label!r}: empty or padded with blanks")
    match = _SCHEME.match(text)
    if match is None:
        return Location("file", "", text, label=label)
    scheme = match.group(1).lower()
    if scheme == "file" and text.lower().startswith("file://"):
        path = text[len("file://") :]
        if not path.startswith("/"):
            raise UsageError(f"{label}: a file:// URI needs an absolute path (file:///dir/x)")
        return Location("file", "", path, label=label)
    if scheme != "s3" or not text.lower().startswith("s3://"):
        raise UsageError(
            f"{label}: unknown URI scheme '{scheme}:' (use s3://bucket/key or a local path)"
        )
    bucket, _, key = text[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UsageError(f"{label}: {bucket!r} is not a valid S3 bucket name")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise UsageError(f"{label}: the key is longer than {_MAX_KEY_BYTES} bytes")
    if not is_prefix and (not key or key.endswith("/")):
        raise UsageError(f"{label}: needs an object key after the bucket (s3://bucket/key)")
    return Location("s3", bucket, key, label=label)


def s3_client() -> Any:
    """A boto3 S3 client: standard credential chain, endpoint and retries from the environment.

    An explicit `retries` mode makes the SDK back off on throttling and transient errors;
    `AWS_RETRY_MODE` / `AWS_MAX_ATTEMPTS` still override it (botocore reads them itself).
    """
    # Imported here: boto3 costs ~0.3 s and a local run never needs it.
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        # None leaves AWS_RETRY_MODE to botocore.
        retries=None if os.environ.get("AWS_RETRY_MODE") else {"mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=_READ_THREADS,
    )
    try:
        return boto3.session.Session().client("s3", config=config)
    except Exception as exc:  # botocore raises several unrelated types for bad config
        raise RuntimeFailure(f"cannot create an S3 client: {exc}") from exc


def _s3_error(exc: Exception, loc: Location, action: str) -> BersimError:
    """Translate a botocore exception into a one-line UsageError or RuntimeFailure."""
    from botocore.exceptions import (  # noqa: PLC0415
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in {"NoSuchBucket", "InvalidBucketName"} or (
            action == "check bucket" and status == 404
        ):
            return UsageError(f"{loc.label}: S3 bucket {loc.bucket!r} does not exist")
        if code in {"AccessDenied", "403", "Forbidden"} or status == 403:
            return RuntimeFailure(
                f"{loc.label}: access denied to {action} (check the credentials or task role)"
            )
        message = error.get("Message") or code or str(exc)
        return RuntimeFailure(f"{loc.label}: cannot {action}: {code} {message}".strip())
    if isinstance(exc, EndpointConnectionError):
        return RuntimeFailure(f"{loc.label}: cannot reach the S3 endpoint ({exc})")
    if isinstance(exc, NoCredentialsError):
        return RuntimeFailure(f"{loc.label}: no AWS credentials found to {action}")
    return RuntimeFailure(f"{loc.label}: cannot {action}: {type(exc).__name__}: {exc}")


class Storage:
    """Reads, writes and lists Locations; one S3 client per instance, created on first use."""

    def __init__(self, client_factory: Callable[[], Any] = s3_client) -> None:
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def s3(self) -> Any:
        """The S3 client, created when first needed."""
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _call_s3(self, loc: Location, action: str, func: Callable[[], Any]) -> Any:
        """Run one S3 call and translate its failure."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return func()
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(exc, loc, action) from exc

    def check_writable(self, loc: Location) -> None:
        """Fail early, before any work, when `loc` can obviously not be written.

        S3: HeadBucket. 404 means the bucket does not exist; 403 only means this role may not
        list the bucket, which a write-only task role is allowed to be, so the write decides.
        """
        if loc.scheme == "file":
            path = Path(loc.key)
            if path.is_dir():
                raise UsageError(f"{loc.label}: is a directory, not a file")
            ancestor = path.absolute().parent
            while not ancestor.exists() and ancestor != ancestor.parent:
                ancestor = ancestor.parent
            if not ancestor.is_dir():
                raise UsageError(f"{loc.label}: cannot create its folder: {ancestor} is a file")
            if not os.access(ancestor, os.W_OK):
                raise RuntimeFailure(f"{loc.label}: cannot write: {ancestor} is not writable")
            return
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            self._call_s3(loc, "check bucket", lambda: self.s3.head_bucket(Bucket=loc.bucket))
        except RuntimeFailure as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _status(cause) == 403:
                return
            raise

    def write_bytes(self, loc: Location, data: bytes) -> None:
        """Write `data` to `loc` atomically (all of it, or nothing)."""
        content_type = CONTENT_TYPES.get(Path(loc.key).suffix, "application/octet-stream")
        if loc.scheme == "s3":
            self._call_s3(
                loc,
                "write",
                lambda: self.s3.put_object(
                    Bucket=loc.bucket, Key=loc.key, Body=data, ContentType=content_type
                ),
            )
            return
        _write_local(loc, data)

    def read_bytes(self, loc: Location) -> bytes:
        """Read the whole object at `loc`."""
        if loc.scheme == "s3":
            response = self._call_s3(
                loc, "read", lambda: self.s3.get_object(Bucket=loc.bucket, Key=loc.key)
            )
            return self._call_s3(loc, "read", response["Body"].read)
        try:
            return Path(loc.key).read_bytes()
        except OSError as exc:
            raise RuntimeFailure(f"{loc.label}: cannot read: {exc.strerror or exc}") from exc

    def read_many(self, locs: list[Location]) -> Iterator[tuple[Location, bytes]]:
        """Read several objects (S3: in parallel), yielding them in the order given."""
        if not locs:
            return iter(())
        if locs[0].scheme == "file" or len(locs) == 1:
            return ((loc, self.read_bytes(loc)) for loc in locs)
        _ = self.s3  # create the client once, before the threads share it
        pool = ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(locs)))
        try:
            results = list(pool.map(self.read_bytes, locs))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return iter(zip(locs, results, strict=True))

    def list_objects(self, prefix: Location) -> list[tuple[Location, int]]:
        """Every object under the prefix folder, recursively, with its size in bytes, sorted."""
        if prefix.scheme == "s3":
            return self._list_s3(prefix)
        root = Path(prefix.key)
        if root.exists() and not root.is_dir():
            raise UsageError(f"{prefix.label}: is a file, not a folder of task results")
        if not root.exists():
            return []
        found = []
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found.append(
                    (Location("file", "", str(path), label=str(path)), path.stat().st_size)
                )
        return found

    def _list_s3(self, prefix: Location) -> list[tuple[Location, int]]:
        key_prefix = prefix.key.rstrip("/") + "/" if prefix.key.strip("/") else ""

        def pages() -> list[dict[str, Any]]:
            paginator = self.s3.get_paginator("list_objects_v2")
            iterator = paginator.paginate(
                Bucket=prefix.bucket,
                Prefix=key_prefix,
                PaginationConfig={"PageSize": _LIST_PAGE_SIZE},
            )
            return list(iterator)

        found = []
        for page in self._call_s3(prefix, "list objects", pages):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):  # a "folder" placeholder the console creates
                    continue
                uri = f"s3://{prefix.bucket}/{key}"
                found.append((Location("s3", prefix.bucket, key, label=uri), int(item["Size"])))
        return sorted(found, key=lambda pair: pair[0].key)


def _status(exc: Any) -> int | None:
    """The HTTP status of a botocore ClientError."""
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _write_local(loc: Location, data: bytes) -> None:
    """Write a local file atomically: temp file in the same folder, fsync, os.replace."""
    path = Path(loc.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UsageError(f"{loc.label}: cannot create its folder: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise RuntimeFailure(
            f"{loc.label}: cannot create its folder: {exc.strerror or exc}"
        ) from exc
    if path.is_dir():
        raise UsageError(f"{loc.label}: is a directory, not a file")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise RuntimeFailure(f"{loc.label}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
