"""What MWAA reads from its bucket: dags/, requirements-mwaa.txt and plugins.zip.

Each file is uploaded only when its content differs from the object's, so a re-run leaves the
object versions, and with them the MWAA environment, as they are. The comparison is the ETag:
for an object created by PutObject and encrypted with SSE-S3 or not at all (storage.yaml's
buckets use SSE-S3), the ETag is the MD5 digest of its data; with SSE-KMS or a multipart upload
it is not (S3 API reference, Object: ETag).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deployer.aws import error_code
from deployer.console import DeployError
from deployer.settings import Context

DAGS_PREFIX = "dags/"
REQUIREMENTS_KEY = "requirements/requirements-mwaa.txt"
PLUGINS_KEY = "plugins/plugins.zip"


def _skipped(relative: str) -> bool:
    return "__pycache__/" in relative or relative.endswith(".pyc")


def _etag(s3: Any, bucket: str, key: str) -> str | None:
    try:
        return str(s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')
    except ClientError as error:
        if error_code(error) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def upload_if_changed(s3: Any, *, bucket: str, key: str, body: bytes) -> bool:
    """Puts the object unless its ETag is the body's MD5; True when it uploaded."""
    if _etag(s3, bucket, key) == hashlib.md5(body, usedforsecurity=False).hexdigest():
        return False
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return True


def object_version(s3: Any, bucket: str, key: str) -> str:
    """The object's current version ID, which MWAA's *S3ObjectVersion parameters take."""
    try:
        version = s3.head_object(Bucket=bucket, Key=key).get("VersionId")
    except ClientError as error:
        raise DeployError(f"cannot read s3://{bucket}/{key}: {error}") from error
    if not version or version == "null":
        raise DeployError(
            f"s3://{bucket}/{key} has no version ID; the MWAA bucket must be versioned"
        )
    return str(version)


@dataclass(frozen=True)
class SyncResult:
    uploaded: int
    deleted: int
    unchanged: int


def sync_dags(s3: Any, *, bucket: str, directory: Path) -> SyncResult:
    """dags/ mirrored to s3://bucket/dags/: changed files put, files gone deleted."""
    local = {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not _skipped(path.relative_to(directory).as_posix())
    }
    remote: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=DAGS_PREFIX):
        for item in page.get("Contents", []):
            remote[item["Key"].removeprefix(DAGS_PREFIX)] = str(item["ETag"]).strip('"')
    uploaded = unchanged = 0
    for relative, path in local.items():
        body = path.read_bytes()
        if remote.get(relative) == hashlib.md5(body, usedforsecurity=False).hexdigest():
            unchanged += 1
            continue
        s3.put_object(Bucket=bucket, Key=DAGS_PREFIX + relative, Body=body)
        uploaded += 1
    gone = [key for key in remote if key not in local and not _skipped(key)]
    # DeleteObjects takes at most 1,000 keys.
    for start in range(0, len(gone), 1000):
        s3.delete_objects(
            Bucket=bucket,
            Delete={
                "Objects": [{"Key": DAGS_PREFIX + key} for key in gone[start : start + 1000]],
                "Quiet": True,
            },
        )
    return SyncResult(uploaded=uploaded, deleted=len(gone), unchanged=unchanged)


def plugins_zip(directory: Path) -> bytes:
    """plugins/ zipped flat (MWAA unpacks plugins.zip into its plugins folder), with fixed
    timestamps and order: the same sources give the same bytes, so the version stays."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = path.relative_to(directory).as_posix()
            if _skipped(name):
                continue
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


@dataclass(frozen=True)
class Versions:
    """The object versions the MWAA stack points the environment at."""

    requirements: str
    plugins: str | None


def upload(ctx: Context, *, bucket: str) -> None:
    """dags/, requirements-mwaa.txt and plugins.zip to the MWAA bucket."""
    project = ctx.project
    s3 = ctx.aws.client("s3")
    with ctx.console.step(f"Upload to s3://{bucket}") as step:
        if not project.dags.is_dir():
            raise DeployError(f"no dags/ directory at {project.dags}")
        synced = sync_dags(s3, bucket=bucket, directory=project.dags)
        ctx.console.info(
            f"dags/: {synced.uploaded} uploaded, {synced.deleted} deleted, "
            f"{synced.unchanged} unchanged"
        )
        changed = synced.uploaded + synced.deleted
        files = [(REQUIREMENTS_KEY, project.mwaa_requirements.read_bytes())]
        if project.plugins.is_dir():
            files.append((PLUGINS_KEY, plugins_zip(project.plugins)))
        else:
            ctx.console.info("no plugins/ directory: the Results view is not deployed")
        for key, body in files:
            uploaded = upload_if_changed(s3, bucket=bucket, key=key, body=body)
            changed += uploaded
            ctx.console.info(f"{'uploaded' if uploaded else 'unchanged'}: s3://{bucket}/{key}")
        step.result = f"{changed} change(s)" if changed else "no changes"


def versions(ctx: Context, *, bucket: str) -> Versions:
    s3 = ctx.aws.client("s3")
    requirements = object_version(s3, bucket, REQUIREMENTS_KEY)
    ctx.console.info(f"requirements version: {requirements}")
    plugins = None
    if ctx.project.plugins.is_dir():
        plugins = object_version(s3, bucket, PLUGINS_KEY)
        ctx.console.info(f"plugins version: {plugins}")
    return Versions(requirements=requirements, plugins=plugins)
