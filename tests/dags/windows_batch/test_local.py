"""local.py: the same argv with S3 mapped to a folder, and bersim's exit codes as task outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from windows_batch.local import BersimLocalOperator, to_local_argv

RUN_ID = "manual__2026-01-02T03:04:05+00:00"


def test_s3_uris_map_to_the_local_root(tmp_path: Path) -> None:
    argv = [
        "aggregate",
        "--input",
        f"s3://bucket-a/sim/task_results/{RUN_ID}/",
        "--output",
        f"s3://bucket-a/sim/aggregate_results/{RUN_ID}/",
        "--expected-tasks",
        "3",
    ]
    mapped = to_local_argv(argv, tmp_path)
    assert mapped[0] == "aggregate"
    assert mapped[2] == f"{tmp_path}/bucket-a/sim/task_results/{RUN_ID}/"
    assert mapped[4] == f"{tmp_path}/bucket-a/sim/aggregate_results/{RUN_ID}/"
    assert mapped[5:] == ["--expected-tasks", "3"]


@pytest.mark.octave
def test_runs_bersim_and_writes_under_the_same_key(tmp_path: Path) -> None:
    output = f"s3://b1/sim/task_results/{RUN_ID}/task-00000.json"
    op = BersimLocalOperator(
        task_id="t",
        command=[
            "simulate",
            "--ebn0-db",
            "4",
            "--max-bits",
            "20000",
            "--seed",
            "7",
            "--task-index",
            "0",
            "--output",
            output,
        ],
        local_root=str(tmp_path),
    )
    assert op.run_bersim() == 0
    written = tmp_path / "b1" / "sim" / "task_results" / RUN_ID / "task-00000.json"
    doc = json.loads(written.read_text())
    assert doc["bits"] == 20000
    assert doc["task_index"] == 0


def test_bad_input_fails_without_retry_and_quotes_bersim(tmp_path: Path) -> None:
    op = BersimLocalOperator(
        task_id="t",
        command=[
            "simulate",
            "--ebn0-db",
            "99",
            "--max-bits",
            "10",
            "--seed",
            "1",
            "--output",
            "s3://b1/x.json",
        ],
        local_root=str(tmp_path),
    )
    with pytest.raises(AirflowFailException, match=r"bersim exited with 2 .*bersim: error: .*99"):
        op.execute({})  # type: ignore[arg-type]
