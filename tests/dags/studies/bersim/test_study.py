"""studies/bersim/study.py: the BER study through the engine's study interface: its plan as
work items, its exit codes, and the one-line summary of results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.definitions.param import ParamsDict

from bersim.cli import build_parser
from studies.bersim import study as ber_study
from studies.bersim.plan import plan_study
from windows_batch import catalog, planning, python_study
from windows_batch import settings as settings_mod
from windows_batch.study import RunContext, StudyError

SETTINGS = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "my-results"})
INFO = catalog.study_info(Path(ber_study.__file__).resolve().parent)
STUDY = python_study.load(INFO, SETTINGS)
RUN_ID = "manual__2026-01-02T03:04:05.678901+00:00"
CONTEXT = RunContext(run_id=RUN_ID, bucket="my-results", results_prefix="sim", local=False)
RESULTS_JSON = {
    "bits": 123_456_789,
    "expected_tasks": 6,
    "missing_tasks": [],
    "rows": [
        {"ebn0_db": 0.0, "errors": 9000, "ber": 0.078},
        {"ebn0_db": 10.0, "errors": 120, "ber": 3.9e-6},
        {"ebn0_db": 12.0, "errors": 80, "ber": 9.1e-9},
    ],
}


def params_with(conf: dict[str, Any]) -> dict[str, Any]:
    params = ParamsDict(STUDY.form(SETTINGS))
    params.update(conf)
    return params.validate()


def test_the_study_is_the_ber_study_the_dag_always_was() -> None:
    assert isinstance(STUDY, ber_study.BerStudy)
    assert INFO.kind == "python"
    assert INFO.dag_id == "windows-batch-compute-dag"
    assert (STUDY.sweep_task_id, STUDY.aggregate_task_id) == ("simulate", "aggregate")
    assert INFO.results_prefix == "sim"


def test_the_plan_is_the_planners_tasks_as_work_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BERSIM_BITS_PER_S", raising=False)
    params = params_with({"num_tasks": 20, "ebn0_db": [0, 6, 10]})
    plan = STUDY.plan(params, conf={}, context=CONTEXT, settings=SETTINGS)
    inputs = ber_study.ber_form.validate(
        params, bucket="my-results", results_prefix="sim", local=False
    )
    planned = plan_study(inputs, RUN_ID)
    assert [item.index for item in plan.items] == list(range(20))
    assert [item.argv for item in plan.items] == [tuple(t.argv) for t in planned.tasks]
    assert [item.expected_s for item in plan.items] == pytest.approx(
        [bits / ber_study.BITS_PER_S for bits in planned.expected_task_bits]
    )
    assert plan.aggregate is not None
    assert plan.aggregate.argv == ("python", "-m", "bersim", *planned.aggregate_command)
    assert plan.outputs_uri == f"s3://my-results/sim/aggregate_results/{RUN_ID}/"
    assert plan.progress_uri == f"s3://my-results/sim/task_results/{RUN_ID}/"
    assert plan.published == ("results.png", "results.csv", "results.json")
    assert plan.time_field == "max_bits_per_task"
    assert plan.sweep.task_id == "simulate"
    assert plan.aggregate_step is not None
    assert plan.aggregate_step.task_id == "aggregate"
    assert plan.summary.startswith("20 tasks over 3 Eb/N0 points (adaptive allocation)")


def test_bits_per_second_can_be_set_for_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    params = params_with({"num_tasks": 4, "ebn0_db": [0, 6]})
    monkeypatch.delenv("BERSIM_BITS_PER_S", raising=False)
    default = STUDY.plan(params, conf={}, context=CONTEXT, settings=SETTINGS).items
    monkeypatch.setenv("BERSIM_BITS_PER_S", str(ber_study.BITS_PER_S * 4))
    faster = STUDY.plan(params, conf={}, context=CONTEXT, settings=SETTINGS).items
    assert [i.expected_s for i in faster] == pytest.approx([i.expected_s / 4 for i in default])


def test_every_work_item_parses_with_bersims_parser_small_negative_points_too() -> None:
    """Issue 17 point 9 through the study interface: the argv the engine runs is what bersim's
    parser reads, for a point of -5e-05 dB too (Python 3.12's argparse read `--ebn0-db -5e-05`
    as an option: exit 2 for every task of that point)."""
    params = params_with({"num_tasks": 6, "ebn0_db": [-5e-05, 0, 3]})
    plan = STUDY.plan(params, conf={}, context=CONTEXT, settings=SETTINGS)
    parser = build_parser()
    points = []
    for item in plan.items:
        assert item.argv[:3] == ("python", "-m", "bersim")
        args = parser.parse_args(list(item.argv[3:]))
        assert args.task_index == item.index
        points.append(args.ebn0_db)
    assert sorted(set(points)) == [-5e-05, 0.0, 3.0]
    assert plan.aggregate is not None
    assert parser.parse_args(list(plan.aggregate.argv[3:])).expected_tasks == 6


def test_a_billion_errors_per_point_plans() -> None:
    """Issue 17 point 7 through plan_tasks: the form's largest target_errors (10^9) plans."""
    conf = {"target_errors": 10**9}
    planned = planning.plan_run(
        STUDY, SETTINGS, params=params_with(conf), conf=conf, run_id=RUN_ID, write=False
    )
    assert planned.plan.work_items == 200


def test_a_task_longer_than_its_deadline_is_refused_naming_the_bits_field() -> None:
    """Issue 17 point 8: 10^12 bits without early stop is ~25,000 s against a 7200 s deadline."""
    conf = {"max_bits_per_task": 10**12, "target_errors": 0}
    with pytest.raises(StudyError) as refused:
        planning.plan_run(
            STUDY, SETTINGS, params=params_with(conf), conf=conf, run_id=RUN_ID, write=False
        )
    assert refused.value.field == "max_bits_per_task"
    assert f"TASK_TIMEOUT_S={SETTINGS.task_timeout_s}" in str(refused.value)


def test_exit_codes_mean_what_bersim_says_and_the_final_ones_are_final() -> None:
    from bersim import errors

    assert STUDY.exit_meaning(errors.EXIT_USAGE) == "bad input; a retry would not help"
    assert STUDY.exit_meaning(3).startswith("task results missing")
    assert STUDY.exit_meaning(1) == "runtime failure"
    assert STUDY.exit_meaning(99) == "failed"
    assert INFO.final_exit_codes == (errors.EXIT_USAGE, 3)


def test_summary_names_points_bits_and_the_worst_point() -> None:
    line = ber_study.summary_line(RESULTS_JSON)
    assert line == (
        "3 Eb/N0 points, 1.23e+08 bits simulated, worst point 12 dB: 80 errors (BER 9.10e-09)"
    )
    partial = ber_study.summary_line({**RESULTS_JSON, "missing_tasks": [1, 4]})
    assert partial.endswith("; 2 of 6 task results MISSING")
    one = ber_study.summary_line({"bits": 10, "rows": [{"ebn0_db": 3, "errors": 1, "ber": 0.1}]})
    assert "3 dB: 1 error (BER" in one


def test_summary_of_rows_without_the_expected_keys_does_not_raise() -> None:
    """Another study's rows (no errors, no ebn0_db) must not crash the aggregate's note."""
    assert ber_study.summary_line({"rows": [{"price": 1.5}, "x"]}).startswith("1 Eb/N0 points")
    assert ber_study.summary_line({}) == "no results"


def test_summarize_reads_results_json_from_the_outputs() -> None:
    files = {"results.json": json.dumps(RESULTS_JSON).encode()}
    assert STUDY.summarize(files.get) == ber_study.summary_line(RESULTS_JSON)
    assert STUDY.summarize({}.get) is None
    assert STUDY.summarize({"results.json": b"[1, 2]"}.get) is None
