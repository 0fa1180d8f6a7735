"""local.py: the task runner run here as an ECS container runs it, with the run's objects under
LOCAL_ROOT at S3's keys; exit codes as the study and the task runner mean them; each try's
deadline; the aggregate's results note; scale_in's stand-in.

The operators run real chunks of the tiny test study (tests/workloads/studies/tiny) planned by
the engine's own plan_tasks code: `python -m wbrun` and the study's Python items, no Airflow
scheduler.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from windows_batch import catalog, planning
from windows_batch import settings as settings_mod
from windows_batch.dag_factory import load_study
from windows_batch.local import LocalAggregateOperator, LocalRunnerOperator, LocalScaleInOperator

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "tests" / "workloads" / "studies" / "tiny"
RUN_ID = "manual__2026-01-02T03:04:05+00:00"
BUCKET = "local-results"
CHUNK = 3


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """openjd-model's verdicts on the study's template, shared by the file's tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Path:
    """The local backend's stand-in for S3 (LOCAL_ROOT), set by the operator, not inherited."""
    monkeypatch.delenv("WB_LOCAL_ROOT", raising=False)
    monkeypatch.setenv("AIRFLOW__WINDOWS_BATCH__CACHE_DIR", str(cache_dir))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the runner's work folders
    return tmp_path / "buckets"


def local_settings(root: Path) -> settings_mod.Settings:
    env = {
        "BACKEND": "local",
        "LOCAL_ROOT": str(root),
        "S3_BUCKET": BUCKET,
        "RUN_NOTE": "off",
    }
    return settings_mod.load({f"AIRFLOW__WINDOWS_BATCH__{k}": v for k, v in env.items()})


def plan(settings: settings_mod.Settings, **conf: Any) -> planning.Planned:
    """plan_tasks' plan of the tiny study, its manifest written under LOCAL_ROOT."""
    study = load_study(catalog.study_info(TINY), settings)
    params = {k: v.value for k, v in study.form(settings).items()} | conf
    return planning.plan_run(study, settings, params=params, conf=conf, run_id=RUN_ID)


class Ti:
    """The task instance as an operator sees it: XCom kept in a dict."""

    def __init__(self, task_id: str, map_index: int = -1) -> None:
        self.dag_id = "tiny"
        self.task_id = task_id
        self.run_id = RUN_ID
        self.map_index = map_index
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, *, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, *, task_ids: Any = None, key: str = "return_value") -> Any:
        if task_ids == "plan_tasks" and key == "chunk_count":
            return 4
        return None

    def get_ti_count(self, **_: Any) -> int:
        return 0


def context(task_id: str = "work", map_index: int = CHUNK) -> Any:
    """The task context (Airflow's Context, as a dict)."""
    dag = type("Dag", (), {"dag_id": "tiny"})()
    return {"ti": Ti(task_id, map_index), "run_id": RUN_ID, "params": {}, "dag": dag}


def runner(settings: settings_mod.Settings, chunk: Any) -> LocalRunnerOperator:
    study = load_study(catalog.study_info(TINY), settings)
    return LocalRunnerOperator(task_id="work", study=study, settings=settings, chunk=chunk)


def run_folder(root: Path) -> Path:
    return root / BUCKET / "studies" / "tiny"


def test_a_chunk_runs_through_the_task_runner_and_lands_under_s3_s_keys(root: Path) -> None:
    """What the container does on ECS, here: the chunk's items' outputs and the runner's
    record land at `<LOCAL_ROOT>/<bucket>/<key>`, the keys they have in S3."""
    settings = local_settings(root)
    planned = plan(settings, Items=8, PerChunk=2)
    ref = planned.refs[CHUNK].to_json()
    assert runner(settings, ref).execute(context()) is None
    outputs = run_folder(root) / "runs" / RUN_ID / "Out"
    assert sorted(p.name for p in outputs.iterdir()) == ["item-00007.txt", "item-00008.txt"]
    assert (outputs / "item-00008.txt").read_text() == "item 8\n"
    assert planned.plan.outputs_uri == f"s3://{BUCKET}/studies/tiny/runs/{RUN_ID}/"
    record = run_folder(root) / "_engine" / RUN_ID / "chunks" / "done" / f"{CHUNK:05d}-2.json"
    done = json.loads(record.read_text())
    assert (done["status"], done["sha"], done["done"]) == ("done", ref["sha"], 2)


@pytest.mark.parametrize(
    ("code", "final", "meaning"),
    [
        pytest.param(3, True, "final: the study says a retry would not help", id="study-final"),
        pytest.param(1, False, "may pass on a retry", id="other"),
    ],
)
def test_an_item_s_exit_code_fails_the_try_as_the_study_means_it(
    root: Path, code: int, final: bool, meaning: str
) -> None:
    """study.yaml's final_exit_codes (the tiny study's: [3]) fail without retries."""
    settings = local_settings(root)
    planned = plan(settings, Items=8, PerChunk=2, FailItems="7", FailCode=code)
    op = runner(settings, planned.refs[CHUNK].to_json())
    with pytest.raises(AirflowException, match=rf"^exited with {code} \({meaning}\)") as failed:
        op.execute(context())
    assert isinstance(failed.value, AirflowFailException) == final


def test_a_chunk_that_is_not_the_one_planned_fails_without_retry_quoting_the_runner(
    root: Path,
) -> None:
    settings = local_settings(root)
    planned = plan(settings, Items=8, PerChunk=2)
    ref = {**planned.refs[CHUNK].to_json(), "sha": "0" * 64}
    with pytest.raises(
        AirflowFailException,
        match=r"^exited with 65 \(the chunk is not the one plan_tasks planned\): "
        r"wbrun: error: chunk 3 of .* \(digest mismatch\)",
    ):
        runner(settings, ref).execute(context())


def test_a_missing_manifest_fails_without_retry_quoting_the_runner(root: Path) -> None:
    settings = local_settings(root)
    ref = {"chunk": CHUNK, "at": "0:10", "sha": "0" * 64, "items": 2}  # no plan written
    with pytest.raises(
        AirflowFailException,
        match=r"^exited with 64 \(the task runner refused its manifest or arguments\): "
        r"wbrun: error: the manifest header is missing",
    ):
        runner(settings, ref).execute(context())


def test_a_silent_item_past_the_deadline_is_stopped_and_fails_the_try_without_retry(
    root: Path,
) -> None:
    """The item sleeps 30 s before it prints anything; the try's deadline is 2 s: the runner's
    process group is stopped at the deadline, not when the item next writes a line."""
    # Planned with the default deadline (plan_tasks refuses a chunk expected to outrun it).
    planned = plan(local_settings(root), Items=8, PerChunk=2, SleepS=30)
    settings = dataclasses.replace(local_settings(root), task_timeout_s=2)
    op = runner(settings, planned.refs[CHUNK].to_json())
    started = time.monotonic()
    with pytest.raises(AirflowFailException, match=r"reached its deadline \(TASK_TIMEOUT_S=2 s"):
        op.execute(context())
    assert time.monotonic() - started < 30  # stopped before the item woke up
    assert op._proc is not None
    assert op._proc.poll() is not None
    assert not (run_folder(root) / "runs" / RUN_ID / "Out").exists()


def aggregate(settings: settings_mod.Settings) -> LocalAggregateOperator:
    study = load_study(catalog.study_info(TINY), settings)
    return LocalAggregateOperator(task_id="combine", study=study, settings=settings)


def test_the_aggregate_combines_the_outputs_and_puts_its_summary_in_the_note(
    root: Path,
) -> None:
    settings = local_settings(root)
    planned = plan(settings, Items=2, PerChunk=2)
    runner(settings, planned.refs[0].to_json()).execute(context(map_index=0))
    ctx = context("combine", -1)
    assert aggregate(settings).execute(ctx) == "2 items combined"
    note = ctx["ti"].xcom["note_results"]
    assert note.startswith("**Results:** [")
    assert note.endswith("2 items combined")
    # Where the outputs are on this machine: the run's folder under LOCAL_ROOT.
    assert f"`{run_folder(root) / 'runs' / RUN_ID}`" in note


def test_a_failed_aggregate_still_notes_the_partial_results_then_fails(root: Path) -> None:
    """The combine step cannot read an item number from a file it finds: Python's traceback,
    exit 1 (retryable)."""
    settings = local_settings(root)
    plan(settings, Items=2, PerChunk=2)
    outputs = run_folder(root) / "runs" / RUN_ID / "Out"
    outputs.mkdir(parents=True)
    (outputs / "item-xxxxx.txt").write_text("not an item\n")
    ctx = context("combine", -1)
    with pytest.raises(AirflowException, match=r"^exited with 1 \(may pass on a retry\)") as failed:
        aggregate(settings).execute(ctx)
    assert not isinstance(failed.value, AirflowFailException)
    assert ctx["ti"].xcom["note_results"].startswith("**Results (partial: some tasks failed):**")


def test_scale_in_logs_what_ecs_would_do_then_calls_on_done(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = local_settings(root)
    calls: list[tuple[Any, Any]] = []
    op = LocalScaleInOperator(
        task_id="scale_in",
        desired=0,
        settings=settings,
        on_done=lambda ctx, cost: calls.append((ctx, cost)),
    )
    ctx = context("scale_in", -1)
    op.execute(ctx)
    assert calls == [(ctx, None)]  # no cluster, no cost line


def test_a_failing_run_note_never_fails_scale_in(root: Path) -> None:
    def broken(_context: Any, _cost: Any) -> None:
        raise RuntimeError("the REST API is down")

    op = LocalScaleInOperator(
        task_id="scale_in", desired=0, settings=local_settings(root), on_done=broken
    )
    op.execute(context("scale_in", -1))
