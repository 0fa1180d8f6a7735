"""Where a run's results are: the aggregate command the DAG planned, read back from XCom."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PUBLISHED_FILES = ("results.png", "results.csv", "results.json")
"""The only files the view serves, under the run's output prefix."""


class LocationError(ValueError):
    """A results location the view refuses (not s3://, or a key that climbs out of its prefix)."""


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
        """The key of `name` directly under this prefix (a plain file name, nothing else)."""
        if not name or name != posixpath.basename(name) or name in {".", ".."}:
            raise LocationError(f"not a plain file name: {name!r}")
        return self.key + name

    def local_dir(self, root: Path) -> Path:
        """The local backend's stand-in for this prefix: `<root>/<bucket>/<key>`."""
        return root / self.bucket / self.key


@dataclass(frozen=True)
class ResultsLocation:
    """A run's task results (input), its published results (output) and how many tasks it has."""

    input: S3Prefix
    output: S3Prefix
    expected_tasks: int | None


def _option(argv: Sequence[str], name: str) -> str | None:
    args = list(argv)
    for i, arg in enumerate(args[:-1]):
        if arg == name:
            return args[i + 1]
    return None


def from_aggregate_command(argv: object) -> ResultsLocation:
    """The location from `aggregate --input URI --output URI [--expected-tasks N]`."""
    if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
        raise LocationError(f"not an aggregate command: {argv!r}")
    input_uri, output_uri = _option(argv, "--input"), _option(argv, "--output")
    if not input_uri or not output_uri:
        raise LocationError(f"the aggregate command has no --input/--output: {argv!r}")
    expected = _option(argv, "--expected-tasks")
    return ResultsLocation(
        input=S3Prefix.parse(input_uri),
        output=S3Prefix.parse(output_uri),
        expected_tasks=int(expected) if expected and expected.isdigit() else None,
    )
