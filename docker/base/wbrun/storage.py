"""Objects by URI: `s3://bucket/key` through boto3, or (local backend) the same keys on disk.

With `WB_LOCAL_ROOT` set, `s3://bucket/key` is the file `<root>/bucket/key`: the local backend
keeps the key layout of S3. A plain absolute path is a local file either way.

- Writes are atomic: S3 PutObject of bytes built beforehand; locally a temporary file in the
  same folder, then `os.replace`. A failure never leaves a partial object.
- The S3 client retries with back-off on throttling and 5xx (botocore's standard mode) with
  more attempts than the default 3: a task's final upload after hours of work must survive a
  transient 503 (WB_S3_MAX_ATTEMPTS, default 10).
- Listing is one level or recursive, as asked; keys ending in '/' (console folders) are skipped.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ATTEMPTS = 10
READ_THREADS = 16


class StorageError(Exception):
    """An object could not be read or written (the message names it)."""


class NotFound(StorageError):
    """The object does not exist."""


@dataclass(frozen=True)
class Location:
    """`s3://bucket/key` (bucket, key) or a local path (bucket "")."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket else self.key


def parse(uri: str) -> Location:
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise StorageError(f"{uri!r}: no bucket")
        return Location(bucket, key)
    return Location("", uri)


def join(prefix: str, name: str) -> str:
    """`prefix` (a folder URI) and a relative '/'-separated name."""
    return prefix.rstrip("/") + "/" + name.lstrip("/")


class Store:
    """Read, write and list objects by URI (see the module docstring)."""

    def __init__(self, *, local_root: str | None = None) -> None:
        root = local_root if local_root is not None else os.environ.get("WB_LOCAL_ROOT", "")
        self.local_root = Path(root).resolve() if root else None
        self._client: Any = None

    # ---- where things are -----------------------------------------------------------------

    def local_path(self, uri: str) -> Path | None:
        """The file standing for `uri` on this machine, or None when it lives in S3."""
        loc = parse(uri)
        if not loc.bucket:
            return Path(loc.key)
        if self.local_root is None:
            return None
        path = (self.local_root / loc.bucket / loc.key).resolve()
        # Keys with '..' must not reach outside the local root.
        if not path.is_relative_to(self.local_root):
            raise StorageError(f"{uri}: resolves outside {self.local_root}")
        return path

    @property
    def s3(self) -> Any:
        if self._client is None:
            import boto3  # noqa: PLC0415 (0.3 s; local runs never need it)
            from botocore.config import Config  # noqa: PLC0415

            attempts = int(os.environ.get("WB_S3_MAX_ATTEMPTS", str(MAX_ATTEMPTS)))
            self._client = boto3.session.Session().client(
                "s3",
                config=Config(
                    retries={"mode": "standard", "max_attempts": attempts},
                    connect_timeout=10,
                    read_timeout=60,
                    max_pool_connections=READ_THREADS,
                ),
            )
        return self._client

    # ---- reading --------------------------------------------------------------------------

    def read(self, uri: str, *, start: int | None = None, length: int | None = None) -> bytes:
        """The object's bytes (or `length` of them from `start`); NotFound if it is missing."""
        path = self.local_path(uri)
        if path is not None:
            try:
                with path.open("rb") as handle:
                    if start is not None:
                        handle.seek(start)
                    return handle.read() if length is None else handle.read(length)
            except FileNotFoundError:
                raise NotFound(f"{uri}: not found") from None
            except OSError as exc:
                raise StorageError(f"{uri}: cannot read: {exc}") from exc
        loc = parse(uri)
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
        if start is not None:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        try:
            return bytes(self.s3.get_object(**kwargs)["Body"].read())
        except Exception as exc:
            raise _translated(exc, uri, "read") from exc

    def read_many(self, uris: list[str]) -> list[bytes | None]:
        """Several objects at once (S3: in parallel); None for a missing one."""

        def one(uri: str) -> bytes | None:
            try:
                return self.read(uri)
            except NotFound:
                return None

        if len(uris) <= 1 or self.local_path(uris[0]) is not None:
            return [one(u) for u in uris]
        _ = self.s3  # one client, created before the threads share it
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(uris))) as pool:
            return list(pool.map(one, uris))

    def exists(self, uri: str) -> bool:
        """True if the object exists. S3: a listing, not HEAD: with a prefix-scoped
        s3:ListBucket, S3 answers a HEAD of a missing key with 403, not 404."""
        path = self.local_path(uri)
        if path is not None:
            return path.is_file()
        loc = parse(uri)
        try:
            listed = self.s3.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key, MaxKeys=1)
        except Exception as exc:
            raise _translated(exc, uri, "list") from exc
        return any(item.get("Key") == loc.key for item in listed.get("Contents", []))

    def keys_starting(self, uri: str) -> set[str]:
        """The full URIs of the objects whose key starts with `uri`'s key (a raw prefix, not a
        folder): one paginated listing instead of one request per key."""
        path = self.local_path(uri)
        if path is not None:
            if not path.parent.is_dir():
                return set()
            folder = uri[: uri.rfind("/") + 1]
            return {
                folder + p.name
                for p in path.parent.iterdir()
                if p.is_file() and p.name.startswith(path.name)
            }
        loc = parse(uri)
        found: set[str] = set()
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=loc.bucket, Prefix=loc.key
            )
            for page in pages:
                found.update(f"s3://{loc.bucket}/{i['Key']}" for i in page.get("Contents", []))
        except Exception as exc:
            raise _translated(exc, uri, "list") from exc
        return found

    def list_files(self, prefix: str, *, recursive: bool = True) -> list[tuple[str, int]]:
        """(relative name, size) of every object under the folder `prefix`, sorted."""
        path = self.local_path(prefix)
        if path is not None:
            if not path.is_dir():
                return []
            walk = path.rglob("*") if recursive else path.iterdir()
            return sorted(
                (p.relative_to(path).as_posix(), p.stat().st_size)
                for p in walk
                if p.is_file() and not p.name.startswith(".wb-tmp-")
            )
        loc = parse(prefix)
        key_prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
        found = []
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Prefix": key_prefix}
        if not recursive:
            kwargs["Delimiter"] = "/"
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", []):
                    key = str(item["Key"])
                    if not key.endswith("/"):
                        found.append((key[len(key_prefix) :], int(item["Size"])))
        except Exception as exc:
            raise _translated(exc, prefix, "list") from exc
        return sorted(found)

    # ---- writing --------------------------------------------------------------------------

    def write(
        self,
        uri: str,
        data: bytes,
        *,
        content_type: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Write the whole object atomically; on S3 with `tags` set in the same PutObject
        (x-amz-tagging: S3 authorizes it as PutObjectTagging as well)."""
        path = self.local_path(uri)
        if path is not None:
            _write_local(path, data)
            return
        loc = parse(uri)
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key, "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        if tags:
            kwargs["Tagging"] = urllib.parse.urlencode(dict(tags))
        try:
            self.s3.put_object(**kwargs)
        except Exception as exc:
            raise _translated(exc, uri, "write") from exc

    def upload(self, source: Path, uri: str) -> None:
        """Publish a local file at `uri` (atomically: nothing half-written is ever seen)."""
        path = self.local_path(uri)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".wb-tmp-")
            os.close(fd)
            try:
                with source.open("rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
            return
        loc = parse(uri)
        try:
            # upload_file: one PutObject below 8 MiB, a multipart upload above (atomic as well:
            # the object appears when CompleteMultipartUpload succeeds).
            self.s3.upload_file(str(source), loc.bucket, loc.key)
        except Exception as exc:
            raise _translated(exc, uri, "upload") from exc

    def download(self, uri: str, target: Path) -> None:
        """Fetch one object to a local file."""
        target.parent.mkdir(parents=True, exist_ok=True)
        path = self.local_path(uri)
        if path is not None:
            if not path.is_file():
                raise NotFound(f"{uri}: not found")
            with path.open("rb") as src, target.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            return
        loc = parse(uri)
        try:
            self.s3.download_file(loc.bucket, loc.key, str(target))
        except Exception as exc:
            raise _translated(exc, uri, "download") from exc

    def download_tree(self, prefix: str, target: Path) -> list[str]:
        """Fetch every object under `prefix` into `target`, keeping relative names."""
        names = [name for name, _ in self.list_files(prefix)]
        target.mkdir(parents=True, exist_ok=True)

        def one(name: str) -> None:
            self.download(join(prefix, name), target / name)

        if self.local_path(prefix) is None and len(names) > 1:
            _ = self.s3
            with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(names))) as pool:
                list(pool.map(one, names))
        else:
            for name in names:
                one(name)
        return names


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file under `root`, sorted."""
    if root.is_file():
        yield root
        return
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*") if p.is_file())


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".wb-tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = ""
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def _translated(exc: Exception, uri: str, action: str) -> StorageError:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if code in {"NoSuchKey", "404", "NotFound"}:
        return NotFound(f"{uri}: not found")
    detail = f"{code}: {response.get('Error', {}).get('Message', '')}" if code else str(exc)
    return StorageError(f"{uri}: cannot {action}: {detail.strip()}")
