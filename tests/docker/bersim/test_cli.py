"""bersim's command line: the parser contract, every bad input, and real round trips.

Bad input must give exit 2 (1 for an unreachable endpoint), exactly one stderr line
`bersim: error: ...` naming the problem, no traceback, and no output file. The round trips run
the real Octave kernel (marker `octave`) through local paths, through S3 (moto, in-process so the
mock applies) and through a real `python -m bersim` subprocess.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from bersim.cli import build_parser, main
from bersim.kernel import DEFAULT_CHUNK_BITS
from bersim.result import SEED_MAX, TASK_SCHEMA
from bersim.storage import TASK_RESULT_TAGS

from .conftest import BUCKET

TASK_KEYS = {
    "schema",
    "task_index",
    "ebn0_db",
    "bits",
    "errors",
    "seed",
    "target_errors",
    "max_bits",
    "elapsed_s",
    "provenance",
}


@pytest.fixture(autouse=True)
def quiet_octave(monkeypatch: pytest.MonkeyPatch) -> None:
    """octave-cli without X11 warnings or a history file (it complains on exit otherwise)."""
    monkeypatch.setenv("OCTAVE_EXECUTABLE", "octave-cli")
    monkeypatch.setenv("OCTAVE_HISTFILE", os.devnull)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, needle: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bersim: error: "), err
    assert needle in lines[0], err


def bucket_keys(client: Any) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def task_doc(index: int, ebn0_db: float, bits: int, errors: int) -> dict[str, Any]:
    return {
        "schema": TASK_SCHEMA,
        "task_index": index,
        "ebn0_db": ebn0_db,
        "bits": bits,
        "errors": errors,
        "seed": index,
        "target_errors": 0,
        "max_bits": bits,
        "elapsed_s": 0.5,
        "provenance": {"octave_version": "7.3.0", "bersim_version": "0.1.0"},
    }


def write_tasks(root: Path, docs: list[dict[str, Any]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (root / f"task-{doc['task_index']:05d}.json").write_text(json.dumps(doc))


# --- The parser contract -------------------------------------------------------------------


def test_build_parser_parses_a_planned_argv() -> None:
    args = build_parser().parse_args(
        [
            "simulate",
            "--ebn0-db",
            "4.5",
            "--max-bits",
            "2e8",
            "--seed",
            "123",
            "--target-errors",
            "1E2",
            "--task-index",
            "7",
            "--output",
            "s3://bucket/sim/task_results/run/task-00007.json",
        ]
    )
    assert (args.command, args.ebn0_db, args.max_bits, args.seed) == (
        "simulate",
        4.5,
        200_000_000,
        123,
    )
    assert (args.target_errors, args.task_index) == (100, 7)
    assert isinstance(args.max_bits, int)


def test_build_parser_defaults() -> None:
    sim = build_parser().parse_args(
        ["simulate", "--ebn0-db", "-10", "--max-bits", "1", "--seed", "0", "--output", "x.json"]
    )
    assert (sim.target_errors, sim.task_index, sim.ebn0_db) == (0, None, -10.0)
    agg = build_parser().parse_args(["aggregate", "--input", "s3://b/in", "--output", "out"])
    assert (agg.command, agg.input, agg.output, agg.expected_tasks) == (
        "aggregate",
        "s3://b/in",
        "out",
        None,
    )


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["simulate", "--help"], capsys)
    assert code == 0
    assert "--max-bits" in out
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.startswith("bersim ")


# --- Bad input: simulate -------------------------------------------------------------------

SIM_ARGS = {
    "--ebn0-db": "4",
    "--max-bits": "1000",
    "--seed": "1",
    "--target-errors": "0",
    "--task-index": "0",
}


def simulate_argv(output: str, **changes: str | None) -> list[str]:
    """A valid simulate argv with some options changed (None drops the option)."""
    options = {**SIM_ARGS, "--output": output}
    options.update({k.replace("_", "-"): v for k, v in changes.items()})
    argv = ["simulate"]
    for key, value in options.items():
        if value is not None:
            argv += [key, value]
    return argv


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        pytest.param({"__max_bits": "-5"}, "argument --max-bits: '-5' is negative", id="bits-neg"),
        pytest.param({"__max_bits": "0"}, "argument --max-bits: '0' is outside", id="bits-zero"),
        pytest.param({"__max_bits": "lots"}, "--max-bits: 'lots' is not a number", id="bits-text"),
        pytest.param({"__max_bits": "2.5"}, "--max-bits: '2.5' is not a whole", id="bits-frac"),
        pytest.param({"__max_bits": "nan"}, "--max-bits: 'nan' is not a whole", id="bits-nan"),
        pytest.param({"__max_bits": "1e400"}, "--max-bits: '1e400' is outside", id="bits-huge"),
        pytest.param({"__seed": "-1"}, "argument --seed: '-1' is negative", id="seed-neg"),
        pytest.param({"__seed": str(SEED_MAX + 1)}, "argument --seed:", id="seed-too-big"),
        pytest.param({"__seed": "0x10"}, "--seed: '0x10' is not a number", id="seed-hex"),
        pytest.param({"__target_errors": "-3"}, "--target-errors: '-3' is negative", id="te-neg"),
        pytest.param({"__task_index": "-1"}, "--task-index: '-1' is negative", id="index-neg"),
        pytest.param({"__ebn0_db": "30.5"}, "--ebn0-db: '30.5' dB is outside", id="ebn0-high"),
        pytest.param({"__ebn0_db": "-10.01"}, "--ebn0-db: '-10.01' dB is outside", id="ebn0-low"),
        pytest.param({"__ebn0_db": "four"}, "--ebn0-db: 'four' is not a number", id="ebn0-text"),
        pytest.param({"__ebn0_db": "nan"}, "--ebn0-db: 'nan' dB is outside", id="ebn0-nan"),
        pytest.param({"__ebn0_db": "inf"}, "--ebn0-db: 'inf' dB is outside", id="ebn0-inf"),
        pytest.param({"__seed": None}, "required: --seed", id="seed-missing"),
        pytest.param({"__output": None}, "required: --output", id="output-missing"),
        pytest.param({"__output": "gs://bkt/k.json"}, "unknown URI scheme 'gs:'", id="gs"),
        pytest.param({"__output": "http://h/k.json"}, "unknown URI scheme 'http:'", id="http"),
        pytest.param({"__output": "s3://Bad_Bucket/k"}, "not a valid S3 bucket", id="bucket-name"),
        pytest.param({"__output": "s3://bucket"}, "needs an object key", id="no-key"),
    ],
)
def test_simulate_bad_input(
    changes: dict[str, str | None],
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = simulate_argv(str(tmp_path / "out" / "task.json"), **changes)
    code, out, err = run(argv, capsys)
    assert code == 2
    assert_one_line_error(err, needle)
    assert out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param([], "required: COMMAND", id="no-command"),
        pytest.param(["simulat"], "invalid choice: 'simulat'", id="unknown-command"),
        pytest.param(["aggregate", "--in", "x", "--output", "y"], "required: --input", id="abbrev"),
        pytest.param(
            ["aggregate", "--input", "x", "--output", "y", "--bogus"],
            "unrecognized arguments: --bogus",
            id="unknown-option",
        ),
    ],
)
def test_command_line_shape_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_line_error(err, needle)


def test_simulate_output_onto_a_directory_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "task.json").mkdir()
    code, _, err = run(simulate_argv(str(tmp_path / "task.json")), capsys)
    assert code == 2
    assert_one_line_error(err, "is a directory")
    assert list((tmp_path / "task.json").iterdir()) == []


def test_simulate_below_a_file_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results").write_text("a file where a folder should be")
    code, _, err = run(simulate_argv(str(tmp_path / "results" / "run" / "task.json")), capsys)
    assert code == 2
    assert_one_line_error(err, f"cannot create its folder: {tmp_path / 'results'} is a file")
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_simulate_into_a_missing_bucket_is_refused_before_running(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(simulate_argv("s3://no-such-bucket-0/run/task-00000.json"), capsys)
    assert code == 2
    assert_one_line_error(err, "--output s3://no-such-bucket-0/run/task-00000.json: S3 bucket")
    assert "does not exist" in err
    assert bucket_keys(s3) == []


def test_simulate_with_an_unreachable_endpoint_fails_at_runtime(
    unreachable_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(simulate_argv(f"s3://{BUCKET}/run/task-00000.json"), capsys)
    assert code == 1
    assert_one_line_error(
        err, "cannot reach the S3 endpoint (Could not connect to the endpoint URL"
    )
    assert unreachable_endpoint in err


# --- Bad input: aggregate ------------------------------------------------------------------


def aggregate_bad_local(kind: str, root: Path) -> tuple[list[str], str]:  # noqa: PLR0911
    """Lay out one bad local input; return the extra argv and the message it must give."""
    inputs = root / "in"
    good = [task_doc(0, 0.0, 1_000, 80), task_doc(1, 4.0, 10_000, 125)]
    if kind == "empty-folder":
        inputs.mkdir()
        return [], "no task results (*.json) under this prefix"
    if kind == "missing-folder":
        return [], "no task results (*.json) under this prefix"
    if kind == "prefix-is-a-file":
        inputs.write_text("{}")
        return [], "is a file, not a folder of task results"
    write_tasks(inputs, good)
    if kind == "corrupt-json":
        (inputs / "task-00002.json").write_text('{"schema": "bersim.task_result/1", "bits": 1')
        return [], f"{inputs / 'task-00002.json'}: corrupt JSON"
    if kind == "foreign-json":
        (inputs / "config.json").write_text('{"name": "something else"}')
        return [], f"{inputs / 'config.json'}: not a bersim task result (no 'schema' key"
    if kind == "wrong-type":
        (inputs / "task-00002.json").write_text(
            json.dumps({**task_doc(2, 8.0, 10, 1), "bits": "10"})
        )
        return [], "task-00002.json: 'bits' must be an integer"
    if kind == "duplicate-index":
        (inputs / "task-00001-again.json").write_text(json.dumps(good[1]))
        return [], "task 1 appears twice"
    if kind in {"index-not-its-name", "index-not-its-name-by-hand"}:
        (inputs / "task-00001.json").write_text(json.dumps(good[0]))
        extra = ["--expected-tasks", "2"] if kind == "index-not-its-name" else []
        return extra, "task-00001.json: holds task_index 0, but its name says task 1"
    if kind == "no-planned-name":
        for doc in good:
            (inputs / f"task-{doc['task_index']:05d}.json").rename(
                inputs / f"result-{doc['task_index']}.json"
            )
        return (
            ["--expected-tasks", "2"],
            "no task results (task-00000.json to task-00001.json) under this prefix (2 other",
        )
    if kind == "expected-zero":
        return ["--expected-tasks", "0"], "argument --expected-tasks: '0' is outside"
    if kind == "expected-negative":
        return ["--expected-tasks", "-4"], "argument --expected-tasks: '-4' is negative"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("empty-folder", id="empty-folder"),
        pytest.param("missing-folder", id="missing-folder"),
        pytest.param("prefix-is-a-file", id="prefix-is-a-file"),
        pytest.param("corrupt-json", id="corrupt-json"),
        pytest.param("foreign-json", id="foreign-json"),
        pytest.param("wrong-type", id="wrong-type"),
        pytest.param("duplicate-index", id="duplicate-index"),
        pytest.param("index-not-its-name", id="index-not-its-name"),
        pytest.param("index-not-its-name-by-hand", id="index-not-its-name-by-hand"),
        pytest.param("no-planned-name", id="no-planned-name"),
        pytest.param("expected-zero", id="expected-zero"),
        pytest.param("expected-negative", id="expected-negative"),
    ],
)
def test_aggregate_bad_local_input(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, needle = aggregate_bad_local(kind, tmp_path)
    output = tmp_path / "agg"
    code, out, err = run(
        ["aggregate", "--input", str(tmp_path / "in"), "--output", str(output), *extra], capsys
    )
    assert code == 2
    assert_one_line_error(err, needle)
    assert out == ""
    assert not output.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(
            ["--input", "gs://bkt/in", "--output", "OUT"], "--input gs://bkt/in: unknown", id="gs"
        ),
        pytest.param(
            ["--input", "IN", "--output", "http://h/out"],
            "--output http://h/out: unknown URI scheme 'http:'",
            id="http",
        ),
        pytest.param(
            ["--input", "s3://x/in", "--output", "OUT"], "'x' is not a valid S3 bucket", id="bucket"
        ),
    ],
)
def test_aggregate_bad_uri(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tasks(tmp_path / "in", [task_doc(0, 0.0, 100, 9)])
    argv = [a.replace("IN", str(tmp_path / "in")).replace("OUT", str(tmp_path / "o")) for a in argv]
    code, _, err = run(["aggregate", *argv], capsys)
    assert code == 2
    assert_one_line_error(err, needle)
    assert not (tmp_path / "o").exists()


def test_aggregate_empty_s3_prefix(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s3.put_object(Bucket=BUCKET, Key="sim/task_results/run10/task-00000.json", Body=b"{}")
    code, _, err = run(
        [
            "aggregate",
            "--input",
            f"s3://{BUCKET}/sim/task_results/run1",
            "--output",
            f"s3://{BUCKET}/sim/aggregate_results/run1",
        ],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, f"--input s3://{BUCKET}/sim/task_results/run1: no task results")
    assert bucket_keys(s3) == ["sim/task_results/run10/task-00000.json"]


def test_aggregate_foreign_json_on_s3_names_the_key(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(
        Bucket=BUCKET, Key="in/task-00000.json", Body=json.dumps(task_doc(0, 0.0, 100, 9))
    )
    s3.put_object(Bucket=BUCKET, Key="in/other.json", Body=b'{"schema": "someone/2"}')
    code, _, err = run(
        ["aggregate", "--input", f"s3://{BUCKET}/in", "--output", f"s3://{BUCKET}/out"], capsys
    )
    assert code == 2
    assert_one_line_error(err, f"s3://{BUCKET}/in/other.json: not a bersim task result")
    assert bucket_keys(s3) == ["in/other.json", "in/task-00000.json"]


def test_aggregate_missing_bucket(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["aggregate", "--input", "s3://no-such-bucket-1/in", "--output", "s3://no-such-bucket-1/o"],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, "S3 bucket 'no-such-bucket-1' does not exist")


def test_aggregate_unreachable_endpoint(
    unreachable_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["aggregate", "--input", f"s3://{BUCKET}/in", "--output", str(tmp_path / "o")], capsys
    )
    assert code == 1
    assert_one_line_error(err, "cannot reach the S3 endpoint")
    assert unreachable_endpoint in err
    assert not (tmp_path / "o").exists()


# --- aggregate reads what its run's plan named, and nothing else (issue 17 point 4) ---------


def test_aggregate_reads_only_the_files_the_plan_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    write_tasks(inputs, [task_doc(0, 0.0, 1_000, 80), task_doc(1, 4.0, 10_000, 125)])
    stray = {
        "task-00002.json": task_doc(2, 8.0, 10**6, 7),  # beyond --expected-tasks
        "task-1.json": task_doc(1, 8.0, 10**6, 7),  # not the plan's spelling of task 1
        "task-000001.json": task_doc(1, 8.0, 10**6, 7),
        "config.json": {"name": "something else"},  # foreign
    }
    for name, doc in stray.items():
        (inputs / name).write_text(json.dumps(doc))
    (inputs / "stdout.log").write_text("not a result")
    write_tasks(inputs / "retry", [task_doc(1, 8.0, 10**6, 7)])
    code, out, err = run(
        [
            "aggregate",
            f"--input={inputs}",
            f"--output={tmp_path / 'agg'}",
            "--expected-tasks=2",
        ],
        capsys,
    )
    assert code == 0, err
    assert "2 tasks, 2 Eb/N0 points, 11000 bits, 205 errors" in out
    notes = err.strip().splitlines()
    assert notes == [
        f"bersim: note: skipped 5 objects under {inputs} that are not task results: "
        "config.json, stdout.log, task-000001.json, task-00002.json, task-1.json",
        f"bersim: note: did not read 1 sub-folders of {inputs}: retry/",
    ]
    document = json.loads((tmp_path / "agg" / "results.json").read_text())
    assert (document["tasks"], document["bits"], document["missing_tasks"]) == (2, 11_000, [])


EARLIER_RUN = "baseline-2026-01"  # a run id given through the REST API
LATER_RUN = "manual__2026-01-02T03:04:05.678901+00:00"


@pytest.mark.parametrize("where", ["s3", "local"])
@pytest.mark.parametrize(
    "tasks",
    [
        pytest.param(([0, 1, 2], [0, 1, 2]), id="later-run-would-double-count"),
        pytest.param(([0, 1], [2]), id="later-run-would-fill-a-missing-task"),
    ],
)
def test_a_later_run_inside_an_earlier_runs_folder_is_not_counted(
    where: str,
    tasks: tuple[list[int], list[int]],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 17 point 4: a later run whose task prefix is `<task prefix>/<earlier run id>`
    writes into the earlier run's folder; re-aggregating the earlier run neither counts its
    results nor fails on them. `tasks`: the earlier run's results, the later run's."""
    earlier_tasks, later_tasks = tasks
    if where == "s3":
        client = request.getfixturevalue("s3")
        root = f"s3://{BUCKET}"

        def put(key: str, doc: dict[str, Any]) -> None:
            client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(doc))

        def get(key: str) -> bytes:
            return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    else:
        root = str(tmp_path / "bucket")

        def put(key: str, doc: dict[str, Any]) -> None:
            (tmp_path / "bucket" / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "bucket" / key).write_text(json.dumps(doc))

        def get(key: str) -> bytes:
            return (tmp_path / "bucket" / key).read_bytes()

    earlier = f"sim/task_results/{EARLIER_RUN}"
    for index in earlier_tasks:
        put(f"{earlier}/task-{index:05d}.json", task_doc(index, 2.0, 10_000, 300 + index))
    # The later run's task prefix: sim/task_results/<earlier run id>.
    for index in later_tasks:
        put(f"{earlier}/{LATER_RUN}/task-{index:05d}.json", task_doc(index, 2.0, 10**6, 9_999))
    # The earlier run's aggregate, as its plan wrote it.
    code, _, err = run(
        [
            "aggregate",
            f"--input={root}/{earlier}/",
            f"--output={root}/sim/aggregate_results/{EARLIER_RUN}/",
            "--expected-tasks=3",
        ],
        capsys,
    )
    missing = sorted(set(range(3)) - set(earlier_tasks))
    assert code == (3 if missing else 0), err
    assert f"did not read 1 sub-folders of {root}/{earlier}/: {LATER_RUN}/" in err
    document = json.loads(get(f"sim/aggregate_results/{EARLIER_RUN}/results.json"))
    assert document["tasks"] == len(earlier_tasks)
    assert document["bits"] == 10_000 * len(earlier_tasks)
    assert document["errors"] == sum(300 + i for i in earlier_tasks)
    assert document["missing_tasks"] == missing


# --- aggregate with missing tasks: writes, then exits 3 -------------------------------------


def test_aggregate_missing_tasks_writes_outputs_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tasks(
        tmp_path / "in",
        [task_doc(0, 0.0, 1_000, 80), task_doc(2, 0.0, 3_000, 230), task_doc(1, 6.0, 10**6, 2_400)],
    )
    code, out, err = run(
        [
            "aggregate",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "agg"),
            "--expected-tasks",
            "5",
        ],
        capsys,
    )
    assert code == 3
    assert_one_line_error(err, "2 of 5 expected task results are missing: 3, 4")
    assert "3 tasks, 2 Eb/N0 points, 1004000 bits" in out
    rows = list(csv.DictReader(io.StringIO((tmp_path / "agg" / "results.csv").read_text())))
    assert [(r["ebn0_db"], r["tasks"], r["bits"], r["errors"]) for r in rows] == [
        ("0.0", "2", "4000", "310"),
        ("6.0", "1", "1000000", "2400"),
    ]
    document = json.loads((tmp_path / "agg" / "results.json").read_text())
    assert document["missing_tasks"] == [3, 4]
    assert (tmp_path / "agg" / "results.png").stat().st_size > 10_000


# --- Round trips through the real kernel ---------------------------------------------------


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def octave_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run Octave in a scratch folder: on exit it may dump `octave-workspace` into its cwd."""
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    return scratch


@pytest.mark.octave
@pytest.mark.usefixtures("octave_cwd")
def test_round_trip_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "sim" / "task_results" / "run1"
    # Task 2 stops early: at 6 dB a kernel chunk counts about 626 errors (sd 25), so the
    # first chunk never reaches 1000 and the second does for any seed (7 sd to spare).
    plan = [(0, 2.0, 100_000, 0), (1, 2.0, 60_000, 0), (2, 6.0, 5_000_000, 1_000)]
    for index, ebn0_db, bits, target in plan:
        argv = simulate_argv(
            str(tasks / f"task-{index:05d}.json"),
            __ebn0_db=str(ebn0_db),
            __max_bits=str(bits),
            __seed=str(10 + index),
            __target_errors=str(target),
            __task_index=str(index),
        )
        code, out, err = run(argv, capsys)
        assert code == 0, err
        assert out.startswith(f"bersim: simulate task {index}: Eb/N0 {ebn0_db:g} dB")
    docs = [json.loads((tasks / f"task-{i:05d}.json").read_text()) for i in range(3)]
    for doc, (index, ebn0_db, bits, target) in zip(docs, plan, strict=True):
        assert set(doc) >= TASK_KEYS
        assert (doc["task_index"], doc["ebn0_db"], doc["max_bits"]) == (index, ebn0_db, bits)
        assert doc["target_errors"] == target
        assert {"octave_version", "bersim_version", "python_version", "host"} <= set(
            doc["provenance"]
        )
    assert [d["bits"] for d in docs[:2]] == [100_000, 60_000]  # no early stop: exactly N
    assert docs[2]["bits"] == 2 * DEFAULT_CHUNK_BITS  # stopped after the chunk that got there
    assert docs[2]["errors"] >= 1_000

    output = tmp_path / "sim" / "aggregate_results" / "run1"
    code, _, err = run(
        ["aggregate", "--input", str(tasks), "--output", str(output), "--expected-tasks", "3"],
        capsys,
    )
    assert code == 0, err
    rows = read_csv((output / "results.csv").read_text())
    assert [(r["ebn0_db"], int(r["tasks"])) for r in rows] == [("2.0", 2), ("6.0", 1)]
    assert int(rows[0]["bits"]) == 160_000
    assert int(rows[0]["errors"]) == docs[0]["errors"] + docs[1]["errors"]
    assert int(rows[1]["bits"]) == docs[2]["bits"]
    for row in rows:
        assert float(row["ber_ci_low"]) <= float(row["ber"]) <= float(row["ber_ci_high"])
    document = json.loads((output / "results.json").read_text())
    assert document["missing_tasks"] == []
    assert document["tasks"] == 3


@pytest.mark.octave
@pytest.mark.usefixtures("octave_cwd")
def test_round_trip_s3(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for index in range(2):
        argv = simulate_argv(
            f"s3://{BUCKET}/sim/task_results/run1/task-{index:05d}.json",
            __ebn0_db="3",
            __max_bits="50000",
            __seed=str(index),
            __task_index=str(index),
        )
        code, _, err = run(argv, capsys)
        assert code == 0, err
    code, out, err = run(
        [
            "aggregate",
            "--input",
            f"s3://{BUCKET}/sim/task_results/run1",
            "--output",
            f"s3://{BUCKET}/sim/aggregate_results/run1/",
            "--expected-tasks",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"s3://{BUCKET}/sim/aggregate_results/run1/results.png" in out
    assert bucket_keys(s3) == [
        "sim/aggregate_results/run1/results.csv",
        "sim/aggregate_results/run1/results.json",
        "sim/aggregate_results/run1/results.png",
        "sim/task_results/run1/task-00000.json",
        "sim/task_results/run1/task-00001.json",
    ]
    # Task results carry the tag the bucket's lifecycle rule expires (any prefix); the
    # published results none, so they are kept.
    for key in bucket_keys(s3):
        tag_set = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
        tags = {tag["Key"]: tag["Value"] for tag in tag_set}
        assert tags == (TASK_RESULT_TAGS if key.startswith("sim/task_results/") else {}), key
    tasks = [
        json.loads(
            s3.get_object(Bucket=BUCKET, Key=f"sim/task_results/run1/task-{i:05d}.json")[
                "Body"
            ].read()
        )
        for i in range(2)
    ]
    csv_text = s3.get_object(Bucket=BUCKET, Key="sim/aggregate_results/run1/results.csv")
    rows = read_csv(csv_text["Body"].read().decode())
    assert len(rows) == 1
    assert int(rows[0]["bits"]) == 100_000
    assert int(rows[0]["errors"]) == sum(t["errors"] for t in tasks)
    png = s3.get_object(Bucket=BUCKET, Key="sim/aggregate_results/run1/results.png")
    assert png["ContentType"] == "image/png"
    assert png["Body"].read().startswith(b"\x89PNG")


def bersim(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m bersim ...` in a subprocess, as the container and the local backend run it."""
    return subprocess.run(
        [sys.executable, "-m", "bersim", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@pytest.mark.octave
def test_round_trip_subprocess(tmp_path: Path) -> None:
    for index, ebn0_db in enumerate(("0", "5")):
        done = bersim(
            *simulate_argv(
                str(tmp_path / "tasks" / f"task-{index:05d}.json"),
                __ebn0_db=ebn0_db,
                __max_bits="2e5",
                __seed=str(index + 1),
                __task_index=str(index),
            ),
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    done = bersim(
        "aggregate",
        "--input",
        str(tmp_path / "tasks"),
        "--output",
        str(tmp_path / "agg"),
        "--expected-tasks",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(str(tmp_path / "agg" / "results.png"))
    rows = read_csv((tmp_path / "agg" / "results.csv").read_text())
    assert [(r["ebn0_db"], r["bits"]) for r in rows] == [("0.0", "200000"), ("5.0", "200000")]


def test_subprocess_bad_input_is_one_line_without_traceback(tmp_path: Path) -> None:
    done = bersim(*simulate_argv("gs://bucket/task.json", __max_bits="-1"))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "argument --max-bits: '-1' is negative")
    done = bersim("aggregate", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "o"))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "no task results")
    assert list(tmp_path.iterdir()) == []


def test_subprocess_octave_failure_is_a_runtime_failure(tmp_path: Path) -> None:
    done = bersim(
        *simulate_argv(str(tmp_path / "task.json")),
        env={"OCTAVE_EXECUTABLE": str(tmp_path / "no-octave-here")},
    )
    assert done.returncode == 1, done.stderr
    assert_one_line_error(done.stderr, "Octave not found: ")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def moto_server(aws_env: None) -> Any:
    """A moto server on 127.0.0.1 for subprocesses (mock_aws only patches this process)."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_subprocess_aggregate_through_s3_endpoint(moto_server: str, tmp_path: Path) -> None:
    # The path the container takes: a fresh process, boto3 configured by the environment only.
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server)
    client.create_bucket(Bucket=BUCKET)
    for doc in (task_doc(0, 2.0, 10_000, 380), task_doc(1, 2.0, 30_000, 1_100)):
        key = f"sim/task_results/run7/task-{doc['task_index']:05d}.json"
        client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(doc))
    done = bersim(
        "aggregate",
        "--input",
        f"s3://{BUCKET}/sim/task_results/run7",
        "--output",
        f"s3://{BUCKET}/sim/aggregate_results/run7",
        "--expected-tasks",
        "3",
        env={"AWS_ENDPOINT_URL": moto_server},
    )
    assert done.returncode == 3, done.stderr
    assert_one_line_error(done.stderr, "1 of 3 expected task results are missing: 2")
    body = client.get_object(Bucket=BUCKET, Key="sim/aggregate_results/run7/results.json")["Body"]
    document = json.loads(body.read())
    assert (document["bits"], document["errors"], document["missing_tasks"]) == (40_000, 1_480, [2])
    assert list(tmp_path.iterdir()) == []
