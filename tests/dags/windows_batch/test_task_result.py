"""task_result.py: a result already written counts only if it is this task's, whole and valid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bersim.cli import build_parser
from windows_batch.plan import simulate_argv
from windows_batch.task_result import describe_result, result_uri

OUTPUT = "s3://b/sim/task_results/manual__1/task-00002.json"
ARGV = simulate_argv(
    ebn0_db=2.5, max_bits=50_000, seed=9, target_errors=0, task_index=2, output_uri=OUTPUT
)
DOC: dict[str, Any] = {
    "schema": "bersim.task_result/1",
    "task_index": 2,
    "ebn0_db": 2.5,
    "bits": 50_000,
    "errors": 700,
    "seed": 9,
    "target_errors": 0,
    "max_bits": 50_000,
    "elapsed_s": 0.1,
    "provenance": {},
}


def test_the_result_uri_is_the_commands_output() -> None:
    assert build_parser().parse_args(ARGV).output == OUTPUT  # the container's own reading
    assert result_uri(ARGV) == OUTPUT
    assert result_uri(["aggregate", "--input", "s3://b/x/", "--output", "s3://b/y/"]) is None


def test_a_matching_result_is_described() -> None:
    assert describe_result(ARGV, json.dumps(DOC).encode()) == (
        "task 2, Eb/N0 2.5 dB, 50000 bits, 700 errors"
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"schema": "other/1"}, id="schema"),
        pytest.param({"task_index": 3}, id="index"),
        pytest.param({"seed": 10}, id="seed"),
        pytest.param({"ebn0_db": 3.0}, id="point"),
        pytest.param({"max_bits": 60_000}, id="budget"),
        pytest.param({"bits": 40_000}, id="short-without-early-stop"),
        pytest.param({"errors": 60_000}, id="more-errors-than-bits"),
        pytest.param({"bits": True}, id="bool-count"),
    ],
)
def test_a_foreign_or_broken_result_is_not_reused(change: dict[str, Any]) -> None:
    assert describe_result(ARGV, json.dumps({**DOC, **change}).encode()) is None


def test_garbage_is_not_reused() -> None:
    assert describe_result(ARGV, b"\xff\xfe") is None
    assert describe_result(ARGV, b"[1, 2]") is None
