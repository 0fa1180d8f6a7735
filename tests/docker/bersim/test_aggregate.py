"""bersim.aggregate and bersim.result: sums, intervals, theory, validation on handcrafted results.

Expected values come from the handcrafted counts and from scipy computed here, independently of
bersim's own interval code (scipy.special.betaincinv vs scipy.stats.binomtest).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest, norm

from bersim.aggregate import (
    CSV_COLUMNS,
    MAX_RESULT_BYTES,
    load_results,
    missing_message,
    planned_index,
    run_aggregate,
    summarise,
    to_csv,
)
from bersim.errors import UsageError
from bersim.result import TASK_SCHEMA, parse_task_result
from bersim.storage import Location, Storage

# (task_index, ebn0_db, bits, errors): two tasks at 0 dB, one at 4 dB, one error-free at 10 dB.
HANDCRAFTED = [
    (0, 0.0, 1_000, 80),
    (1, 0.0, 3_000, 230),
    (2, 4.0, 100_000, 1_250),
    (3, 10.0, 5_000_000, 0),
]


def task_doc(index: int | None, ebn0_db: float, bits: int, errors: int, **extra: Any) -> dict:
    """A task result as simulate writes it, built by hand."""
    doc = {
        "schema": TASK_SCHEMA,
        "task_index": index,
        "ebn0_db": ebn0_db,
        "bits": bits,
        "errors": errors,
        "seed": 1000 + (index or 0),
        "target_errors": 0,
        "max_bits": bits,
        "elapsed_s": 0.25,
        "provenance": {"octave_version": "7.3.0", "bersim_version": "0.1.0"},
    }
    doc.update(extra)
    return doc


def write_results(root: Path, docs: list[dict]) -> None:
    for doc in docs:
        name = f"task-{doc['task_index']:05d}.json" if doc["task_index"] is not None else "x.json"
        (root / name).write_text(json.dumps(doc))


def parsed(docs: list[dict]) -> list[tuple[str, Any]]:
    return [
        (f"mem://{i}", parse_task_result(json.dumps(d).encode(), where=f"mem://{i}"))
        for i, d in enumerate(docs)
    ]


def theory(ebn0_db: float) -> float:
    """Q(sqrt(2 Eb/N0)) via the normal survival function: independent of erfc."""
    return float(norm.sf(math.sqrt(2 * 10 ** (ebn0_db / 10))))


def test_summarise_sums_per_point_with_exact_intervals_and_theory() -> None:
    summary = summarise(parsed([task_doc(*t) for t in HANDCRAFTED]), expected_tasks=4)
    assert [(r.ebn0_db, r.tasks, r.bits, r.errors) for r in summary.rows] == [
        (0.0, 2, 4_000, 310),
        (4.0, 1, 100_000, 1_250),
        (10.0, 1, 5_000_000, 0),
    ]
    for row in summary.rows:
        interval = binomtest(row.errors, row.bits).proportion_ci(0.95, method="exact")
        assert row.ber == row.errors / row.bits
        assert row.ber_ci_low == pytest.approx(interval.low, rel=1e-12, abs=0)
        assert row.ber_ci_high == pytest.approx(interval.high, rel=1e-12)
        assert row.ber_ci_low <= row.ber <= row.ber_ci_high
        assert row.ber_theory == pytest.approx(theory(row.ebn0_db), rel=1e-12)
    # The error-free point still has an upper bound: about 3.69 / bits at 95 %.
    assert summary.rows[2].ber_ci_high == pytest.approx(-math.log(0.025) / 5_000_000, rel=1e-4)
    assert (summary.tasks, summary.bits, summary.errors) == (4, 5_104_000, 1_560)
    assert summary.missing_tasks == []
    assert summary.octave_versions == ["7.3.0"]


def test_summarise_lists_missing_tasks() -> None:
    summary = summarise(parsed([task_doc(*t) for t in HANDCRAFTED]), expected_tasks=7)
    assert summary.missing_tasks == [4, 5, 6]
    assert missing_message(summary).startswith("3 of 7 expected task results are missing: 4, 5, 6")


def test_missing_message_shortens_a_long_list() -> None:
    summary = summarise(parsed([task_doc(0, 0.0, 10, 1)]), expected_tasks=100)
    message = missing_message(summary)
    assert message.startswith("99 of 100 expected task results are missing: 1, 2, ")
    assert "(79 more)" in message


def test_summarise_refuses_a_duplicate_task_index() -> None:
    docs = [task_doc(7, 0.0, 100, 5), task_doc(7, 2.0, 100, 3)]
    with pytest.raises(UsageError, match=r"task 7 appears twice: mem://0 and mem://1"):
        summarise(parsed(docs))


def test_summarise_refuses_an_index_outside_expected_tasks() -> None:
    with pytest.raises(UsageError, match=r"task_index 4 is outside \[0, 4\)"):
        summarise(parsed([task_doc(4, 0.0, 100, 5)]), expected_tasks=4)


def test_summarise_needs_indexes_only_with_expected_tasks() -> None:
    docs = [task_doc(None, 0.0, 100, 5), task_doc(None, 0.0, 300, 7)]
    assert summarise(parsed(docs)).rows[0].bits == 400
    with pytest.raises(UsageError, match="has no task_index"):
        summarise(parsed(docs), expected_tasks=2)


def test_csv_has_the_exact_columns_and_round_trips() -> None:
    summary = summarise(parsed([task_doc(*t) for t in HANDCRAFTED]))
    text = to_csv(summary).decode()
    assert text.splitlines()[0] == "ebn0_db,tasks,bits,errors,ber,ber_ci_low,ber_ci_high,ber_theory"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    for written, row in zip(rows, summary.rows, strict=True):
        assert int(written["bits"]) == row.bits
        assert int(written["errors"]) == row.errors
        assert float(written["ber_ci_high"]) == row.ber_ci_high  # repr round-trips exactly
        assert float(written["ber_theory"]) == row.ber_theory


def test_run_aggregate_writes_all_outputs_with_missing_tasks(tmp_path: Path) -> None:
    inputs = tmp_path / "task_results" / "run1"
    inputs.mkdir(parents=True)
    write_results(inputs, [task_doc(*t) for t in HANDCRAFTED])
    (inputs / "stdout.log").write_text("not a result: skipped")
    output = tmp_path / "aggregate" / "run1"
    summary = run_aggregate(
        Storage(),
        input_prefix=Location("file", "", str(inputs)),
        output_prefix=Location("file", "", str(output)),
        expected_tasks=6,
    )
    assert summary.missing_tasks == [4, 5]
    assert sorted(p.name for p in output.iterdir()) == [
        "results.csv",
        "results.json",
        "results.png",
    ]
    document = json.loads((output / "results.json").read_text())
    assert document["missing_tasks"] == [4, 5]
    assert document["expected_tasks"] == 6
    assert (document["tasks"], document["bits"], document["errors"]) == (4, 5_104_000, 1_560)
    assert [row["bits"] for row in document["rows"]] == [4_000, 100_000, 5_000_000]
    assert document["interval"] == {"method": "clopper-pearson", "confidence": 0.95}
    assert document["provenance"]["task_octave_versions"] == ["7.3.0"]
    assert {"bersim_version", "python_version", "host"} <= set(document["provenance"])
    assert (output / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_load_results_refuses_an_empty_prefix(tmp_path: Path) -> None:
    (tmp_path / "only.txt").write_text("x")
    with pytest.raises(UsageError, match=r"no task results \(\*\.json\) under this prefix"):
        load_results(Storage(), Location("file", "", str(tmp_path), label="--input x"))


def test_load_results_refuses_an_oversized_object(tmp_path: Path) -> None:
    (tmp_path / "huge.json").write_bytes(b" " * (MAX_RESULT_BYTES + 1))
    with pytest.raises(UsageError, match="too large to be a bersim task result"):
        load_results(Storage(), Location("file", "", str(tmp_path)))


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("task-00000.json", 0),
        ("task-00007.json", 7),
        ("task-99999.json", 99_999),
        ("task-123456.json", 123_456),
        ("task-7.json", None),
        ("task-000007.json", None),
        ("task-00007.json.tmp", None),
        (".task-00007.json.abc.tmp", None),
        ("Task-00007.json", None),
        ("task-0000a.json", None),
        ("x.json", None),
    ],
)
def test_planned_index_reads_only_the_plans_names(name: str, index: int | None) -> None:
    assert planned_index(name) == index


def test_load_results_reads_one_level_and_the_planned_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_results(tmp_path, [task_doc(*t) for t in HANDCRAFTED])
    (tmp_path / "later").mkdir()
    write_results(tmp_path / "later", [task_doc(0, 0.0, 10, 1)])
    prefix = Location("file", "", str(tmp_path))
    results = load_results(Storage(), prefix, expected_tasks=3)
    assert [task.task_index for _, task in results] == [0, 1, 2]
    assert capsys.readouterr().err.splitlines() == [
        f"bersim: note: skipped 1 objects under {tmp_path} that are not task results: "
        "task-00003.json",
        f"bersim: note: did not read 1 sub-folders of {tmp_path}: later/",
    ]
    assert [task.task_index for _, task in load_results(Storage(), prefix)] == [0, 1, 2, 3]


def test_load_results_refuses_a_result_that_is_not_the_task_its_name_says(
    tmp_path: Path,
) -> None:
    (tmp_path / "task-00002.json").write_text(json.dumps(task_doc(None, 0.0, 10, 1)))
    with pytest.raises(UsageError, match="holds task_index None, but its name says task 2"):
        load_results(Storage(), Location("file", "", str(tmp_path)), expected_tasks=3)


def _bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


GOOD = task_doc(3, 4.0, 1_000, 10)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        pytest.param(b'{"schema": "bersim.task', "corrupt JSON", id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", "not UTF-8", id="binary"),
        pytest.param(_bytes([1, 2, 3]), "a JSON list, not a bersim task result", id="array"),
        pytest.param(_bytes({"bits": 5}), "no 'schema' key", id="foreign-no-schema"),
        pytest.param(
            _bytes({**GOOD, "schema": "other/1"}), "schema 'other/1'", id="foreign-schema"
        ),
        pytest.param(_bytes({**GOOD, "bits": "1000"}), "'bits' must be an integer", id="bits-str"),
        pytest.param(_bytes({**GOOD, "bits": True}), "'bits' must be an integer", id="bits-bool"),
        pytest.param(_bytes({**GOOD, "bits": 0}), "'bits' must be in [1, 1000]", id="bits-zero"),
        pytest.param(_bytes({**GOOD, "bits": 1001}), "'bits' must be in", id="bits>max_bits"),
        pytest.param(_bytes({**GOOD, "errors": 1001}), "'errors' must be in", id="errors>bits"),
        pytest.param(_bytes({**GOOD, "errors": -1}), "'errors' must be in", id="errors<0"),
        pytest.param(_bytes({**GOOD, "errors": 1.5}), "'errors' must be an integer", id="float"),
        pytest.param(_bytes({**GOOD, "ebn0_db": 31}), "'ebn0_db' must be in", id="ebn0-high"),
        pytest.param(
            _bytes(GOOD).replace(b'"ebn0_db": 4.0', b'"ebn0_db": NaN'), "'ebn0_db'", id="ebn0-nan"
        ),
        pytest.param(_bytes({**GOOD, "ebn0_db": "4"}), "'ebn0_db' must be a number", id="ebn0-s"),
        pytest.param(_bytes({**GOOD, "seed": -1}), "'seed' must be in", id="seed-negative"),
        pytest.param(_bytes({**GOOD, "task_index": -2}), "'task_index'", id="index-negative"),
        pytest.param(_bytes({**GOOD, "elapsed_s": None}), "'elapsed_s'", id="elapsed-null"),
        pytest.param(_bytes({**GOOD, "provenance": []}), "'provenance'", id="provenance-list"),
    ],
)
def test_parse_task_result_refuses_bad_documents(data: bytes, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_task_result(data, where="s3://b/run/task-00003.json")
    message = str(info.value)
    assert message.startswith("s3://b/run/task-00003.json: ")
    assert needle in message


def test_parse_task_result_accepts_what_simulate_writes() -> None:
    task = parse_task_result(_bytes(GOOD), where="x")
    assert (task.task_index, task.ebn0_db, task.bits, task.errors) == (3, 4.0, 1_000, 10)
    assert parse_task_result(task_json_round_trip(task), where="y") == task


def task_json_round_trip(task: Any) -> bytes:
    document = json.loads(task.to_json_bytes())
    assert document["schema"] == TASK_SCHEMA
    assert document["ber"] == task.errors / task.bits
    return json.dumps(document).encode()
