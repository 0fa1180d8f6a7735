"""Where a run's results are, checked against where its study's results may be.

plan_tasks records where the run's files are (XCom `results_location`). A user with XCom edit
rights could rewrite that record, so the view believes it only inside bounds it knows from
elsewhere: the deployment's results bucket (the `S3_BUCKET` setting; locally, any bucket of the
local root) and the study's own prefix, which only the DAG file sets (the DAG's `results:<prefix>`
tag). Anything else is refused.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path


class LocationError(ValueError):
    """A results location the view refuses (not s3://, outside the study, a climbing key)."""


@dataclass(frozen=True)
class S3Prefix:
    """`s3://bucket/key/`: a prefix that ends with a slash."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Prefix:
        """Parse `s3://bucket/key/`; refuse anything with `.` or `..` segments or no bucket."""
        if not uri.startswith("s3://"):
            raise LocationError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[len("s3://") :].partition("/")
        segments = [s for s in key.split("/") if s]
        if not bucket or "/" in bucket or any(s in {".", ".."} for s in segments):
            raise LocationError(f"refused results location {uri!r}")
        return cls(bucket=bucket, key="/".join(segments) + "/" if segments else "")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> str:
        """The key of `name` under this prefix: a relative path without '.' or '..' parts."""
        parts = name.split("/")
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or any(p in {"", ".", ".."} for p in parts)
            or posixpath.normpath(name) != name
        ):
            raise LocationError(f"not a plain relative file name: {name!r}")
        return self.key + name

    def local_dir(self, root: Path) -> Path:
        """The local backend's stand-in for this prefix: `<root>/<bucket>/<key>`."""
        return root / self.bucket / self.key


@dataclass(frozen=True)
class ResultsLocation:
    """A run's published outputs, its engine records (progress), and its size."""

    outputs: S3Prefix
    engine: S3Prefix
    chunks: int
    work_items: int


def from_record(record: object, *, study_prefix: str, bucket: str | None) -> ResultsLocation:
    """The location plan_tasks recorded, if it lies in `bucket` (None: any) under the study's
    own prefix; else LocationError."""
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError:
            raise LocationError("the recorded location is not JSON") from None
    if not isinstance(record, dict):
        raise LocationError("no results location recorded")
    outputs = S3Prefix.parse(str(record.get("outputs", "")))
    engine = S3Prefix.parse(str(record.get("engine", "")))
    own = study_prefix.strip("/") + "/"
    for where in (outputs, engine):
        if bucket is not None and where.bucket != bucket:
            raise LocationError(f"{where.uri} is not in the deployment's results bucket")
        if not where.key.startswith(own):
            raise LocationError(f"{where.uri} is not under the study's prefix {own}")
    if outputs.bucket != engine.bucket:
        raise LocationError("the outputs and the records are in different buckets")
    chunks, items = record.get("chunks"), record.get("work_items")
    return ResultsLocation(
        outputs=outputs,
        engine=engine,
        chunks=chunks if isinstance(chunks, int) and chunks >= 0 else 0,
        work_items=items if isinstance(items, int) and items >= 0 else 0,
    )
