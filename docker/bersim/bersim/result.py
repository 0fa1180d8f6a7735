"""The task result document: what `simulate` writes and `aggregate` reads back and checks.

A task result is a JSON object with `"schema": "bersim.task_result/1"`, so a foreign JSON file
under the input prefix is recognised instead of being summed.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bersim import __version__
from bersim.errors import UsageError

TASK_SCHEMA = "bersim.task_result/1"
AGGREGATE_SCHEMA = "bersim.aggregate_result/1"

EBN0_MIN_DB = -10.0
EBN0_MAX_DB = 30.0
MAX_BITS = 2**53
"""Octave counts in doubles, exact up to 2**53."""
SEED_MAX = 2**32 - 2
"""Octave reduces a "state" seed modulo 2**32 - 1: larger seeds would repeat smaller ones."""


@dataclass(frozen=True)
class TaskResult:
    """One simulate run.

    task_index: position in the study (None when run by hand); ebn0_db: Eb/N0 in dB;
    bits: bits actually simulated; errors: bit errors counted; seed: generator seed;
    target_errors: early-stop target (0 = off); max_bits: the bit budget;
    elapsed_s: kernel time in seconds (Octave start-up excluded);
    provenance: versions and host that produced it.
    """

    task_index: int | None
    ebn0_db: float
    bits: int
    errors: int
    seed: int
    target_errors: int
    max_bits: int
    elapsed_s: float
    provenance: dict[str, Any]

    def to_json_bytes(self) -> bytes:
        """The document as UTF-8 JSON, schema marker first."""
        document = {"schema": TASK_SCHEMA, **asdict(self)}
        document["ber"] = self.errors / self.bits if self.bits else None
        return (json.dumps(document, indent=2) + "\n").encode()


def provenance(**extra: Any) -> dict[str, Any]:
    """Versions and host of this process, plus `extra` (e.g. octave_version)."""
    return {
        **extra,
        "bersim_version": __version__,
        "python_version": platform.python_version(),
        "platform": sys.platform,
        "host": socket.gethostname(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _int_field(doc: dict[str, Any], key: str, *, low: int, high: int, where: str) -> int:
    value = doc.get(key)
    # bool is an int subclass; a JSON true is not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where}: '{key}' must be an integer, got {value!r}")
    if not low <= value <= high:
        raise UsageError(f"{where}: '{key}' must be in [{low}, {high}], got {value}")
    return value


def _float_field(doc: dict[str, Any], key: str, *, low: float, high: float, where: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where}: '{key}' must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise UsageError(f"{where}: '{key}' must be in [{low:g}, {high:g}], got {value!r}")
    return number


def parse_task_result(data: bytes, *, where: str) -> TaskResult:
    """Parse and validate one task result; raise UsageError naming `where` and the bad key."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start}), not a task result") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: corrupt JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: a JSON {type(doc).__name__}, not a bersim task result")
    schema = doc.get("schema")
    if schema != TASK_SCHEMA:
        found = "no 'schema' key" if schema is None else f"schema {schema!r}"
        raise UsageError(f"{where}: not a bersim task result ({found}, expected {TASK_SCHEMA!r})")
    raw_index = doc.get("task_index")
    index = (
        None
        if raw_index is None
        else _int_field(doc, "task_index", low=0, high=MAX_BITS, where=where)
    )
    max_bits = _int_field(doc, "max_bits", low=1, high=MAX_BITS, where=where)
    bits = _int_field(doc, "bits", low=1, high=max_bits, where=where)
    errors = _int_field(doc, "errors", low=0, high=bits, where=where)
    prov = doc.get("provenance", {})
    if not isinstance(prov, dict):
        raise UsageError(f"{where}: 'provenance' must be an object, got {prov!r}")
    return TaskResult(
        task_index=index,
        ebn0_db=_float_field(doc, "ebn0_db", low=EBN0_MIN_DB, high=EBN0_MAX_DB, where=where),
        bits=bits,
        errors=errors,
        seed=_int_field(doc, "seed", low=0, high=SEED_MAX, where=where),
        target_errors=_int_field(doc, "target_errors", low=0, high=MAX_BITS, where=where),
        max_bits=max_bits,
        elapsed_s=_float_field(doc, "elapsed_s", low=0.0, high=math.inf, where=where),
        provenance=prov,
    )
