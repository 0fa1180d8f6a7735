"""bersim.storage: URI parsing, atomic local writes, S3 through moto, and error translation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import botocore.endpoint
import botocore.handlers
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from bersim import storage as storage_mod
from bersim.errors import RuntimeFailure, UsageError
from bersim.storage import Location, Storage, parse_uri

from .conftest import BUCKET


@pytest.mark.parametrize(
    ("text", "is_prefix", "expected"),
    [
        pytest.param("s3://b-1/k/x.json", False, ("s3", "b-1", "k/x.json"), id="s3-object"),
        pytest.param("s3://bucket.x", True, ("s3", "bucket.x", ""), id="s3-whole-bucket"),
        pytest.param("s3://bkt/sim/run/", True, ("s3", "bkt", "sim/run/"), id="s3-prefix-slash"),
        pytest.param("results/t.json", False, ("file", "", "results/t.json"), id="relative"),
        pytest.param("/tmp/r/t.json", False, ("file", "", "/tmp/r/t.json"), id="absolute"),
        pytest.param("file:///tmp/r", True, ("file", "", "/tmp/r"), id="file-uri"),
        pytest.param("C:\\results\\t.json", False, ("file", "", "C:\\results\\t.json"), id="drive"),
    ],
)
def test_parse_uri_accepts(text: str, is_prefix: bool, expected: tuple[str, str, str]) -> None:
    loc = parse_uri(text, option="--output", is_prefix=is_prefix)
    assert (loc.scheme, loc.bucket, loc.key) == expected


@pytest.mark.parametrize(
    ("text", "is_prefix", "needle"),
    [
        pytest.param("gs://bucket/key", False, "unknown URI scheme 'gs:'", id="gs"),
        pytest.param("http://host/key", False, "unknown URI scheme 'http:'", id="http"),
        pytest.param("s3:bucket/key", False, "unknown URI scheme 's3:'", id="s3-no-slashes"),
        pytest.param("s3://Bad_Bucket/k", False, "not a valid S3 bucket name", id="bucket-case"),
        pytest.param("s3://ab/k", False, "not a valid S3 bucket name", id="bucket-short"),
        pytest.param("s3://a..b/k", False, "not a valid S3 bucket name", id="bucket-dots"),
        pytest.param("s3://bucket", False, "needs an object key", id="no-key"),
        pytest.param("s3://bucket/dir/", False, "needs an object key", id="key-is-folder"),
        pytest.param("file://relative/x", False, "absolute path", id="file-relative"),
        pytest.param("", False, "empty", id="empty"),
        pytest.param(" x.json", False, "blanks", id="padded"),
    ],
)
def test_parse_uri_refuses(text: str, is_prefix: bool, needle: str) -> None:
    with pytest.raises(UsageError, match="--output") as info:
        parse_uri(text, option="--output", is_prefix=is_prefix)
    assert needle in str(info.value)


def test_child_joins_keys_and_paths() -> None:
    assert Location("s3", "b", "sim/agg/").child("results.csv").key == "sim/agg/results.csv"
    assert Location("s3", "b", "").child("results.csv").key == "results.csv"
    assert Location("file", "", "out/agg").child("results.csv").key == str(
        Path("out/agg/results.csv")
    )


def test_local_write_creates_folders_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "task-00001.json"
    loc = parse_uri(str(target), option="--output", is_prefix=False)
    Storage().write_bytes(loc, b"first")
    Storage().write_bytes(loc, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["task-00001.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_local_write_into_a_file_as_folder_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a folder")
    loc = parse_uri(str(tmp_path / "blocker" / "x.json"), option="--output", is_prefix=False)
    with pytest.raises(UsageError, match="cannot create its folder"):
        Storage().write_bytes(loc, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_local_write_over_a_directory_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "x.json").mkdir()
    loc = parse_uri(str(tmp_path / "x.json"), option="--output", is_prefix=False)
    with pytest.raises(UsageError, match="is a directory"):
        Storage().check_writable(loc)
    with pytest.raises(UsageError, match="is a directory"):
        Storage().write_bytes(loc, b"data")


def test_local_list_is_one_level_and_sorted(tmp_path: Path) -> None:
    """What lies in a sub-folder of a run's prefix is never that run's (issue 17 point 4)."""
    for rel in ("run/b/task-00002.json", "run/task-00001.json", "run/notes.txt", "run1/x.json"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    prefix = parse_uri(str(tmp_path / "run"), option="--input", is_prefix=True)
    listing = Storage().list_objects(prefix)
    names = [Path(loc.key).relative_to(tmp_path).as_posix() for loc, _ in listing]
    assert names == ["run/notes.txt", "run/task-00001.json"]
    assert all(size == 2 for _, size in listing)
    assert [loc.name for loc, _ in listing] == ["notes.txt", "task-00001.json"]
    assert Storage().list_folder(prefix) == (listing, ["b"])


def test_local_list_of_a_missing_folder_is_empty_and_of_a_file_is_bad_input(
    tmp_path: Path,
) -> None:
    assert Storage().list_objects(Location("file", "", str(tmp_path / "nope"))) == []
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(UsageError, match="is a file"):
        Storage().list_objects(Location("file", "", str(tmp_path / "file.json"), label="--input"))


def test_s3_write_read_list_round_trip(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two keys per page makes the listing cross several pages.
    monkeypatch.setattr(storage_mod, "_LIST_PAGE_SIZE", 2)
    store = Storage()
    prefix = parse_uri(f"s3://{BUCKET}/sim/task_results/run1", option="--input", is_prefix=True)
    for index in range(5):
        store.write_bytes(prefix.child(f"task-{index:05d}.json"), f"{index}".encode())
    for key in (
        "sim/task_results/run10/x.json",
        *(f"sim/task_results/run1/later/task-{i:05d}.json" for i in range(3)),
        "sim/task_results/run1/more/x.json",
    ):
        store.write_bytes(parse_uri(f"s3://{BUCKET}/{key}", option="o", is_prefix=False), b"{}")
    listing, folders = store.list_folder(prefix)
    assert [loc.key for loc, _ in listing] == [
        f"sim/task_results/run1/task-{i:05d}.json" for i in range(5)
    ]
    assert [loc.name for loc, _ in listing] == [f"task-{i:05d}.json" for i in range(5)]
    # S3 rolls a sub-folder's keys up into one CommonPrefixes entry, returned nowhere else
    # ("These rolled-up keys are not returned elsewhere in the response. Each rolled-up result
    # counts as only one return against the MaxKeys value": Amazon S3 API Reference,
    # ListObjectsV2, Delimiter).
    assert folders == ["later", "more"]
    assert store.list_objects(prefix) == listing
    assert [data for _, data in store.read_many([loc for loc, _ in listing])] == [
        f"{i}".encode() for i in range(5)
    ]
    head = s3.head_object(Bucket=BUCKET, Key="sim/task_results/run1/task-00000.json")
    assert head["ContentType"] == "application/json"


def test_s3_missing_bucket_is_bad_input(s3) -> None:
    store = Storage()
    loc = parse_uri("s3://no-such-bucket-here/k.json", option="--output", is_prefix=False)
    with pytest.raises(UsageError, match="bucket 'no-such-bucket-here' does not exist"):
        store.check_writable(loc)
    with pytest.raises(UsageError, match="does not exist"):
        store.write_bytes(loc, b"x")
    with pytest.raises(UsageError, match="does not exist"):
        store.list_objects(
            parse_uri("s3://no-such-bucket-here/p", option="--input", is_prefix=True)
        )


def test_s3_head_bucket_forbidden_lets_the_write_decide(aws_env: None) -> None:
    # A task role may write its prefix without being allowed to list the bucket.
    client = boto3.client("s3", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
        Storage(client_factory=lambda: client).check_writable(
            Location("s3", BUCKET, "k.json", label="--output")
        )
        stub.assert_no_pending_responses()


def test_s3_access_denied_on_write_is_a_runtime_failure(aws_env: None) -> None:
    client = boto3.client("s3", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(RuntimeFailure, match="access denied"):
            Storage(write_client_factory=lambda: client).write_bytes(
                Location("s3", BUCKET, "k.json", label="--output s3://x/k.json"), b"x"
            )


def test_s3_unreachable_endpoint_is_a_runtime_failure_naming_it(
    unreachable_endpoint: str,
) -> None:
    # Nothing listens there: boto3 honours AWS_ENDPOINT_URL itself, and one attempt is enough.
    endpoint = unreachable_endpoint
    loc = parse_uri(f"s3://{BUCKET}/k.json", option="--output", is_prefix=False)
    with pytest.raises(RuntimeFailure, match="cannot reach the S3 endpoint") as info:
        Storage().write_bytes(loc, b"x")
    assert endpoint in str(info.value)


class _Body:
    """The raw body of an answered HTTP request (what botocore reads `content` from)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@pytest.fixture
def s3_put(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """S3's PutObject as an HTTP endpoint would answer it: HTTP 503 SlowDown to the first
    `slow_downs` requests, then 200 (keeping the body it was sent). botocore's back-off sleeps
    are recorded instead of slept.

    The answer is given for every client created from now on (botocore registers its
    BUILTIN_HANDLERS in each new session), so the code under test builds its clients as usual;
    nothing leaves the process.
    """
    state: dict[str, Any] = {"slow_downs": 0, "sent": 0, "stored": [], "sleeps": []}

    def answer(request: Any, **_: Any) -> AWSResponse:
        state["sent"] += 1
        if state["slow_downs"] > 0:
            state["slow_downs"] -= 1
            return AWSResponse(request.url, 503, {}, _Body(SLOW_DOWN))
        body = request.body
        state["stored"].append(body.read() if hasattr(body, "read") else bytes(body))
        return AWSResponse(request.url, 200, {"ETag": '"0"'}, _Body(b""))

    handlers = [*botocore.handlers.BUILTIN_HANDLERS, ("before-send.s3.PutObject", answer)]
    monkeypatch.setattr(botocore.handlers, "BUILTIN_HANDLERS", handlers)
    monkeypatch.setattr(botocore.endpoint.time, "sleep", state["sleeps"].append)
    return state


def test_a_result_write_outlasts_five_503_slow_downs_backing_off(s3_put: dict[str, Any]) -> None:
    """Issue 17 point 12: one transient S3 error at the end of a long task must not throw its
    work away. Standard mode alone gives a request 3 attempts; a result write gets
    RESULT_WRITE_ATTEMPTS, each retry after botocore's exponential back-off with jitter."""
    s3_put["slow_downs"] = 5
    loc = parse_uri(
        f"s3://{BUCKET}/sim/task_results/r/task-00007.json", option="o", is_prefix=False
    )
    Storage().write_bytes(loc, b"two hours of work")
    # One body stored (aws-chunked, with botocore's trailing checksum around the data).
    (stored,) = s3_put["stored"]
    assert b"\r\ntwo hours of work\r\n" in stored
    assert s3_put["sent"] == 6
    sleeps = s3_put["sleeps"]
    assert len(sleeps) == 5
    # Truncated binary exponential back-off: retry n waits rand(0, 1) * min(2^(n-1), 20) s.
    assert all(0 <= s <= min(2**n, 20) for n, s in enumerate(sleeps)), sleeps


def test_a_result_write_gives_up_after_its_attempts_as_a_runtime_failure(
    s3_put: dict[str, Any],
) -> None:
    s3_put["slow_downs"] = 1000
    loc = parse_uri(f"s3://{BUCKET}/sim/k.json", option="--output", is_prefix=False)
    with pytest.raises(RuntimeFailure, match="cannot write: SlowDown"):
        Storage().write_bytes(loc, b"x")
    assert s3_put["sent"] == storage_mod.RESULT_WRITE_ATTEMPTS
    assert s3_put["stored"] == []


def test_reads_keep_the_standard_attempts(aws_env: None) -> None:
    """Only writes wait long: a read that fails is cheap to fail (the task has not run yet)."""
    reads = storage_mod.s3_client()._client_config.retries
    writes = storage_mod.result_write_client()._client_config.retries
    assert reads == {"mode": "standard"}
    assert writes == {"mode": "standard", "total_max_attempts": storage_mod.RESULT_WRITE_ATTEMPTS}
