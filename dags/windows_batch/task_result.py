"""The study's half of "no simulation runs twice": where a simulate task's result is, and
whether a result found there is this task's (same run, index, point, seed and budget).

The engine (ecs.py) reads the object and asks `describe_result`; bersim writes it atomically
(docker/bersim/result.py, schema "bersim.task_result/1"), so a document that parses and matches
the command is a finished simulation. Pure Python: no bersim import (it is not on MWAA).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

TASK_SCHEMA = "bersim.task_result/1"


def _option(command: Sequence[str], name: str) -> str | None:
    args = list(command)
    for i, arg in enumerate(args[:-1]):
        if arg == name:
            return args[i + 1]
    return None


def result_uri(command: Sequence[str]) -> str | None:
    """The `--output` URI of a `simulate` command (None for any other command)."""
    if not command or command[0] != "simulate":
        return None
    return _option(command, "--output")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expected(command: Sequence[str]) -> dict[str, Any] | None:
    try:
        return {
            "task_index": int(_option(command, "--task-index") or ""),
            "seed": int(_option(command, "--seed") or ""),
            "max_bits": int(_option(command, "--max-bits") or ""),
            "target_errors": int(_option(command, "--target-errors") or ""),
            "ebn0_db": float(_option(command, "--ebn0-db") or ""),
        }
    except ValueError:
        return None


def _matches(doc: Any, expected: dict[str, Any]) -> bool:
    if not isinstance(doc, dict) or doc.get("schema") != TASK_SCHEMA:
        return False
    ints = ("task_index", "seed", "max_bits", "target_errors", "bits", "errors")
    if not all(_is_int(doc.get(k)) for k in ints):
        return False
    value = doc.get("ebn0_db")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    same = all(doc[k] == expected[k] for k in ints[:4]) and math.isclose(
        float(value), expected["ebn0_db"], rel_tol=0, abs_tol=1e-12
    )
    bits, errors, max_bits = doc["bits"], doc["errors"], expected["max_bits"]
    # Without early stop (target 0) a finished task has simulated exactly its budget.
    complete = bits == max_bits if expected["target_errors"] == 0 else bits >= 1
    return same and complete and 0 <= errors <= bits <= max_bits


def describe_result(command: Sequence[str], data: bytes) -> str | None:
    """One line about the result if `data` is this command's valid result, else None."""
    expected = _expected(command)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if expected is None or not _matches(doc, expected):
        return None
    return (
        f"task {expected['task_index']}, Eb/N0 {expected['ebn0_db']:g} dB, "
        f"{doc['bits']} bits, {doc['errors']} errors"
    )
