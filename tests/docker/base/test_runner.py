"""The task runner (docker/base/wbrun), run as the container runs it: `python -m wbrun ...`.

Manifests are written by the engine's own writer (windows_batch.manifest) from plans the
engine's own types describe, so the two halves of the contract are tested together: the local
backend's store (WB_LOCAL_ROOT: s3://bucket/key is a file under it) for most behaviours, moto's
S3 (in-process) for staging through the S3 API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from wbrun import runner
from wbrun.cli import main as wbrun_main
from wbrun.storage import Store
from windows_batch import manifest
from windows_batch import settings as settings_mod
from windows_batch.objects import Objects
from windows_batch.study import (
    EmbeddedFile,
    Item,
    PathSpec,
    Plan,
    RunContext,
    StagedInput,
    StepSpec,
    token,
)

RUN = "manual__2026-01-02T03:04:05+00:00"
BUCKET = "results"
PY = sys.executable


def context() -> RunContext:
    return RunContext(run_id=RUN, bucket=BUCKET, results_prefix="studies/t", local=True)


def out_spec() -> PathSpec:
    return PathSpec(name="Out", flow="OUT", out_uri=f"{context().run_uri}Out/")


def writer(index: int, *, fail: int | None = None, text: str = "") -> Item:
    """An item that writes Out/item-<index>.txt, or exits with `fail` after writing it."""
    code = (
        "import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True);"
        f" (p / 'item-{index}.txt').write_text({text or f'item {index}'!r});"
        + (f" sys.exit({fail})" if fail is not None else "")
    )
    return Item(index=index, argv=(PY, "-c", code, token("path", "Out")), expected_s=1)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "buckets"
    monkeypatch.setenv("WB_LOCAL_ROOT", str(root))
    return root


def write(
    root: Path,
    items: list[Item],
    *,
    per_chunk: int = 10,
    sweep: StepSpec | None = None,
    aggregate: Item | None = None,
    aggregate_step: StepSpec | None = None,
    bundle_uri: str = "",
) -> list[manifest.ChunkRef]:
    settings = settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__BACKEND": "local",
            "AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT": str(root),
        }
    )
    plan = Plan(
        sweep=sweep or StepSpec(task_id="work", paths=(out_spec(),)),
        items=items,
        outputs_uri=context().run_uri,
        summary="",
        values={},
        aggregate=aggregate,
        aggregate_step=aggregate_step,
    )
    return manifest.write(
        Objects(settings),
        plan=plan,
        chunks=manifest.group(items, per_chunk),
        context=context(),
        study_name="t",
        bundle_uri=bundle_uri,
    )


def run(ref: manifest.ChunkRef, *extra: str) -> int:
    uri = context().engine_uri + "manifest/"
    return wbrun_main(
        [
            "run",
            "--manifest",
            uri,
            "--chunk",
            str(ref.chunk),
            "--at",
            f"{ref.offset}:{ref.length}",
            "--sha",
            ref.sha,
            *extra,
        ]
    )


def outputs(root: Path) -> list[str]:
    folder = root / BUCKET / "studies/t/runs" / RUN / "Out"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def records(root: Path, kind: str) -> list[str]:
    folder = root / BUCKET / "studies/t/_engine" / RUN / "chunks" / kind
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


def test_a_chunk_runs_its_items_publishes_their_outputs_and_records_them(local: Path) -> None:
    refs = write(local, [writer(i) for i in range(3)])
    assert run(refs[0]) == 0
    assert outputs(local) == ["item-0.txt", "item-1.txt", "item-2.txt"]
    assert records(local, "done") == ["00000-3.json"]
    record = json.loads(
        (local / BUCKET / "studies/t/_engine" / RUN / "chunks/done/00000-3.json").read_text()
    )
    assert record["sha"] == refs[0].sha
    assert [i["status"] for i in record["items"]] == ["done"] * 3


def test_a_finished_chunk_is_not_run_again(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = write(local, [writer(0)])
    assert run(refs[0]) == 0
    (local / BUCKET / "studies/t/runs" / RUN / "Out/item-0.txt").write_text("kept")
    assert run(refs[0]) == 0
    assert "already done" in capsys.readouterr().out
    assert (local / BUCKET / "studies/t/runs" / RUN / "Out/item-0.txt").read_text() == "kept"


def test_a_failing_item_publishes_nothing_and_its_retry_skips_the_finished_items(
    local: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = tmp_path / "fail-once"
    flag.write_text("")
    flaky = Item(
        index=1,
        argv=(
            PY,
            "-c",
            "import os, sys, pathlib; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, "
            "exist_ok=True); (p / 'item-1.txt').write_text('half');"
            f" sys.exit(7) if os.path.exists({str(flag)!r}) else None",
            token("path", "Out"),
        ),
        expected_s=1,
    )
    refs = write(local, [writer(0), flaky, writer(2)])
    assert run(refs[0]) == 7
    # Item 0 is published and recorded; item 1's half-written file is not; item 2 never ran.
    assert outputs(local) == ["item-0.txt"]
    assert records(local, "failed") == ["00000.json"]
    assert records(local, "done") == []
    flag.unlink()
    capsys.readouterr()
    assert run(refs[0]) == 0
    log = capsys.readouterr().out
    assert "item 0 already done: skipped" in log
    assert "item 1 done" in log
    assert outputs(local) == ["item-0.txt", "item-1.txt", "item-2.txt"]
    assert records(local, "done") == ["00000-3.json"]


def test_a_chunk_not_the_one_planned_is_refused(local: Path) -> None:
    refs = write(local, [writer(0), writer(1)], per_chunk=1)
    uri = context().engine_uri + "manifest/"
    code = wbrun_main(
        [
            "run",
            "--manifest",
            uri,
            "--chunk",
            "1",
            "--at",
            f"{refs[1].offset}:{refs[1].length}",
            "--sha",
            refs[0].sha,
        ]
    )
    assert code == runner.EXIT_DATA
    # Without a byte range the runner finds the chunk's line by scanning.
    assert wbrun_main(["run", "--manifest", uri, "--chunk", "1"]) == 0
    assert outputs(local) == ["item-1.txt"]


def test_files_paths_and_tokens_resolve_where_the_task_runs(local: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "tools").mkdir(parents=True)
    (bundle / "tools" / "greet.py").write_text("import sys; print('hello', sys.argv[1])")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.txt").write_text("alpha")
    show = (
        "import json, os, sys, pathlib; out = pathlib.Path(sys.argv[1]); "
        "out.mkdir(parents=True, exist_ok=True); (out / 'seen.json').write_text(json.dumps("
        "{'args': sys.argv[2:], 'cwd': os.getcwd(), 'script': open(sys.argv[2]).read(),"
        " 'input': open(os.path.join(sys.argv[3], 'a.txt')).read(),"
        " 'mine': open(sys.argv[5]).read()}))"
    )
    sweep = StepSpec(
        task_id="work",
        files=(
            EmbeddedFile(
                name="Run", data="print('{{x}}') # " + token("path", "Out"), runnable=True
            ),
        ),
        paths=(
            out_spec(),
            PathSpec(name="In", flow="IN", uri=str(inputs)),
            PathSpec(name="Tool", flow="NONE", bundle="tools/greet.py"),
        ),
        bundle=True,
    )
    item = Item(
        index=0,
        argv=(
            PY,
            "-c",
            show,
            token("path", "Out"),
            token("file", "Run"),
            token("path", "In"),
            token("cwd"),
            token("in", "Mine"),
        ),
        expected_s=1,
        inputs=(StagedInput(name="Mine", uri=str(inputs / "a.txt")),),
    )
    refs = write(local, [item], sweep=sweep, bundle_uri=str(bundle))
    assert run(refs[0]) == 0
    seen = json.loads((local / BUCKET / "studies/t/runs" / RUN / "Out/seen.json").read_text())
    script_path, input_dir, cwd = seen["args"][:3]
    assert script_path.endswith("files/Run")
    assert os.path.isabs(script_path)
    assert "@@wb:" not in seen["script"]
    assert seen["script"].startswith("print('{{x}}') # /")
    assert input_dir == str(inputs)  # locally an input folder is used where it is
    assert seen["input"] == "alpha"
    assert seen["mine"] == "alpha"
    assert cwd == seen["cwd"]


def test_an_aggregate_sees_what_the_sweep_published_and_publishes_only_its_own(
    local: Path,
) -> None:
    combine = Item(
        index=0,
        argv=(
            PY,
            "-c",
            "import sys, pathlib; p = pathlib.Path(sys.argv[1]);"
            " names = sorted(f.name for f in p.glob('item-*.txt'));"
            " (p / 'sum.txt').write_text(','.join(names))",
            token("path", "Out"),
        ),
        expected_s=1,
    )
    refs = write(
        local,
        [writer(0), writer(1)],
        aggregate=combine,
        aggregate_step=StepSpec(task_id="sum", paths=(out_spec(),), sees_outputs=True),
    )
    assert run(refs[0]) == 0
    before = (local / BUCKET / "studies/t/runs" / RUN / "Out/item-0.txt").stat().st_mtime_ns
    assert wbrun_main(["aggregate", "--manifest", context().engine_uri + "manifest/"]) == 0
    folder = local / BUCKET / "studies/t/runs" / RUN / "Out"
    assert (folder / "sum.txt").read_text() == "item-0.txt,item-1.txt"
    assert (folder / "item-0.txt").stat().st_mtime_ns == before  # not published again
    assert records(local, "done") == ["00000-2.json", "aggregate.json"]


def test_an_item_that_outruns_its_timeout_is_stopped(local: Path) -> None:
    sleeper = Item(index=0, argv=(PY, "-c", "import time; time.sleep(60)"), expected_s=1)
    refs = write(local, [sleeper], sweep=StepSpec(task_id="work", env={"WB_ACTION_TIMEOUT_S": "1"}))
    assert run(refs[0]) == runner.EXIT_TIMEOUT


def test_an_item_that_ignores_sigterm_is_killed_after_the_grace(
    local: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "STOP_GRACE_S", 0.5)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    stubborn = Item(index=0, argv=(PY, "-c", code), expected_s=1)
    refs = write(
        local, [stubborn], sweep=StepSpec(task_id="work", env={"WB_ACTION_TIMEOUT_S": "1"})
    )
    started = time.monotonic()
    assert run(refs[0]) == runner.EXIT_TIMEOUT
    assert time.monotonic() - started < 30  # killed, not waited for


def process_state(pid: int) -> str:
    """Linux's state letter of process `pid` ('Z' a zombie), or '' when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def test_a_sigterm_stops_the_item_and_the_runner_without_sitting_out_the_grace(
    local: Path, tmp_path: Path
) -> None:
    """ECS StopTask and the local backend's deadline send SIGTERM to the runner: it stops its
    item's process group and exits 143 once the item has stopped. The grace (STOP_GRACE_S) is
    for an item that ignores SIGTERM, not one that obeyed it."""
    pid_file = tmp_path / "item.pid"
    code = (
        f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()));"
        " time.sleep(60)"
    )
    ref = write(local, [Item(index=0, argv=(PY, "-c", code), expected_s=1)])[0]
    argv = [PY, "-m", "wbrun", "run", "--manifest", context().engine_uri + "manifest/"]
    argv += ["--chunk", "0", "--at", f"{ref.offset}:{ref.length}", "--sha", ref.sha]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        item = int(pid_file.read_text())
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        stopped_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert process_state(item) in {"", "Z"}  # stopped (a zombie once its parent is gone)
    assert stopped_s < runner.STOP_GRACE_S / 2


def test_locally_s3_arguments_name_the_local_buckets_files(local: Path) -> None:
    target = f"s3://{BUCKET}/studies/t/direct/x.txt"
    item = Item(
        index=0,
        argv=(
            PY,
            "-c",
            "import sys, pathlib; p = pathlib.Path(sys.argv[1].split('=', 1)[1]);"
            " p.parent.mkdir(parents=True); p.write_text('ok')",
            f"--output={target}",
        ),
        expected_s=1,
    )
    refs = write(local, [item])
    assert run(refs[0]) == 0
    assert (local / BUCKET / "studies/t/direct/x.txt").read_text() == "ok"


def test_a_missing_command_is_exit_127_and_retryable(local: Path) -> None:
    refs = write(local, [Item(index=0, argv=("no-such-program-here",), expected_s=1)])
    assert run(refs[0]) == 127


def test_the_container_entrypoint_runs_the_runner(tmp_path: Path) -> None:
    entry = Path(__file__).resolve().parents[3] / "docker" / "base" / "entrypoint.sh"
    done = subprocess.run(
        ["bash", str(entry), "exec", "--", PY, "-c", "print('inside')"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(PY).parent}:{os.environ['PATH']}"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "inside"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("WB_LOCAL_ROOT", raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_through_s3_inputs_are_staged_and_inout_changes_land_under_the_run(
    s3: Any, tmp_path: Path
) -> None:
    own = f"s3://{BUCKET}/studies/t"
    for key, body in {"inputs/cache/a.txt": "a", "inputs/cache/sub/b.txt": "b"}.items():
        s3.put_object(Bucket=BUCKET, Key=f"studies/t/{key}", Body=body.encode())
    edit = (
        "import sys, pathlib; p = pathlib.Path(sys.argv[1]);"
        " (p / 'a.txt').write_text('A'); (p / 'new.txt').write_text('new')"
    )
    sweep = StepSpec(
        task_id="work",
        paths=(
            PathSpec(
                name="Cache",
                flow="INOUT",
                uri=f"{own}/inputs/cache/",
                out_uri=f"{own}/runs/{RUN}/Cache/",
            ),
        ),
    )
    item = Item(index=0, argv=(PY, "-c", edit, token("path", "Cache")), expected_s=1)
    plan = Plan(sweep=sweep, items=[item], outputs_uri=f"{own}/runs/{RUN}/", summary="", values={})
    settings = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__S3_BUCKET": BUCKET})
    objects = Objects(settings)
    objects._client = s3
    ctx = RunContext(run_id=RUN, bucket=BUCKET, results_prefix="studies/t", local=False)
    refs = manifest.write(
        objects, plan=plan, chunks=[[item]], context=ctx, study_name="t", bundle_uri=""
    )
    code = runner.ChunkRunner(
        manifest=ctx.engine_uri + "manifest/", store=Store(local_root=""), work=tmp_path / "work"
    ).run_chunk(
        runner.ChunkRunner(manifest=ctx.engine_uri + "manifest/", store=Store(local_root="")).chunk(
            0, at=(refs[0].offset, refs[0].length), sha=refs[0].sha
        ),
        name="chunk-00000",
    )
    assert code == 0
    published = sorted(
        o["Key"]
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"studies/t/runs/{RUN}/")["Contents"]
    )
    # Only what the task changed or added; the inputs are untouched.
    assert published == [f"studies/t/runs/{RUN}/Cache/a.txt", f"studies/t/runs/{RUN}/Cache/new.txt"]
    body = s3.get_object(Bucket=BUCKET, Key="studies/t/inputs/cache/a.txt")["Body"].read()
    assert body == b"a"


def test_a_chunk_asks_s3_once_which_of_its_items_are_done_and_skips_them(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 40-item chunk: the first try lists the item records once (not 40 requests, the cost
    of a 100,000-item run's retries-to-be); its retry, with 30 items recorded done, lists once
    and reads only those 30 records, each checked against its item's digest."""
    own = f"s3://{BUCKET}/studies/t"
    items = [
        Item(
            index=i,
            argv=(PY, "-c", "import sys; sys.exit(9 if sys.argv[1] == '30' else 0)", str(i)),
            expected_s=1,
        )
        for i in range(40)
    ]
    plan = Plan(
        sweep=StepSpec(task_id="work"),
        items=items,
        outputs_uri=f"{own}/runs/{RUN}/",
        summary="",
        values={},
    )
    settings = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__S3_BUCKET": BUCKET})
    objects = Objects(settings)
    objects._client = s3
    ctx = RunContext(run_id=RUN, bucket=BUCKET, results_prefix="studies/t", local=False)
    [ref] = manifest.write(
        objects, plan=plan, chunks=[items], context=ctx, study_name="t", bundle_uri=""
    )
    calls: list[tuple[str, str]] = []

    def count(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, str(params.get("Prefix", params.get("Key", "")))))

    s3.meta.events.register("before-parameter-build.s3", count)
    store = Store(local_root="")
    store._client = s3

    def try_chunk() -> int:
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        chunk_runner = runner.ChunkRunner(
            manifest=ctx.engine_uri + "manifest/", store=store, work=work
        )
        entry = chunk_runner.chunk(0, at=(ref.offset, ref.length), sha=ref.sha)
        return chunk_runner.run_chunk(entry, name="chunk-00000")

    assert try_chunk() == 9  # item 30 fails: items 0-29 are recorded done
    record_prefix = f"studies/t/_engine/{RUN}/items/work-"
    listings = [p for op, p in calls if op == "ListObjectsV2" and p.startswith(record_prefix)]
    assert listings == [record_prefix + "00000"]  # the 40 records' names share "work-00000"
    calls.clear()
    capsys.readouterr()
    assert try_chunk() == 9  # the same item fails again; the 30 before it are skipped
    listings = [p for op, p in calls if op == "ListObjectsV2" and p.startswith(record_prefix)]
    reads = [k for op, k in calls if op == "GetObject" and k.startswith(record_prefix)]
    assert listings == [record_prefix + "00000"]
    assert sorted(reads) == [f"{record_prefix}{i:07d}.json" for i in range(30)]
    assert capsys.readouterr().out.count("already done: skipped") == 30
