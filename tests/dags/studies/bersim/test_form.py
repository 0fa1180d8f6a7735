"""studies/bersim/form.py: the BER study's trigger form (titles, sections, types) and every
refusal naming its field, as plan_tasks makes them (windows_batch.planning.plan_run)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import BaseSerialization

from studies.bersim import form as ber_form
from windows_batch import catalog, planning, python_study
from windows_batch import settings as settings_mod
from windows_batch.engine_form import SECTION_ADVANCED
from windows_batch.settings import Settings
from windows_batch.study import StudyError

SETTINGS = settings_mod.load(
    {
        "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "my-results",
        "AIRFLOW__WINDOWS_BATCH__MAX_CLUSTER_SIZE": "8",
    }
)
LOCAL = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__BACKEND": "local"})
INFO = catalog.study_info(Path(ber_form.__file__).resolve().parent)
STUDY = python_study.load(INFO, SETTINGS)
RUN_ID = "manual__2026-01-02T03:04:05.678901+00:00"

# The form's fields in the order it has always shown them (the BER study before the split).
FORM_NAMES = (
    "s3_bucket",
    "num_tasks",
    "ebn0_db",
    "max_bits_per_task",
    "target_errors",
    "allocation",
    "seed",
    "cluster_size",
    "scale_out_timeout_s",
    "scale_in_timeout_s",
    "s3_prefix_task_results",
    "s3_prefix_aggregate_results",
)

# (conf, field named in the message): the list, then what only plan_tasks can check.
SCHEMA_REFUSALS = [
    pytest.param({"num_tasks": -5}, "num_tasks", id="negative-task-count"),
    pytest.param({"num_tasks": 0}, "num_tasks", id="zero-tasks"),
    pytest.param({"ebn0_db": []}, "ebn0_db", id="empty-ebn0-list"),
    pytest.param({"ebn0_db": [0, "high", 4]}, "ebn0_db", id="non-numeric-ebn0-entry"),
    pytest.param({"ebn0_db": [0, 99]}, "ebn0_db", id="ebn0-out-of-range"),
    pytest.param({"ebn0_db": [2, 2]}, "ebn0_db", id="ebn0-repeated"),
    pytest.param({"allocation": "random"}, "allocation", id="unknown-allocation"),
    pytest.param({"s3_bucket": "My_Bucket"}, "s3_bucket", id="bucket-uppercase-underscore"),
    pytest.param({"s3_bucket": "ab"}, "s3_bucket", id="bucket-too-short"),
    pytest.param({"s3_bucket": "192.168.1.1"}, "s3_bucket", id="bucket-ip-address"),
    pytest.param({"s3_bucket": "my..bucket"}, "s3_bucket", id="bucket-double-dot"),
    pytest.param({"max_bits_per_task": 2.5}, "max_bits_per_task", id="fractional-bits"),
    pytest.param({"target_errors": -1}, "target_errors", id="negative-target"),
    pytest.param({"cluster_size": 9}, "cluster_size", id="cluster-above-max"),
    pytest.param({"cluster_size": 0}, "cluster_size", id="cluster-zero"),
    pytest.param({"cluster_size": "big"}, "cluster_size", id="cluster-other-string"),
    pytest.param({"cluster_size": "4"}, "cluster_size", id="cluster-number-as-string"),
    pytest.param({"cluster_size": 2.5}, "cluster_size", id="cluster-fractional"),
    pytest.param({"num_tasks": ber_form.MAX_TASKS + 1}, "num_tasks", id="too-many-tasks"),
    pytest.param({"seed": -1}, "seed", id="negative-seed"),
    pytest.param({"s3_prefix_task_results": "/sim//x/"}, "s3_prefix_task_results", id="bad-prefix"),
    pytest.param(
        {"s3_prefix_task_results": "sim/../../etc"}, "s3_prefix_task_results", id="dotdot-prefix"
    ),
    pytest.param(
        {"s3_prefix_aggregate_results": "sim/./agg"},
        "s3_prefix_aggregate_results",
        id="dot-prefix",
    ),
    pytest.param({"scale_out_timeout_s": 1}, "scale_out_timeout_s", id="timeout-too-short"),
]
PLAN_ONLY_REFUSALS = [
    pytest.param({"num_tasks": 3, "ebn0_db": [0, 2, 4, 6]}, "ebn0_db", id="more-points-than-tasks"),
    pytest.param({"num_task": 20}, "num_task", id="unknown-field"),
    pytest.param(
        {"s3_prefix_aggregate_results": "sim/task_results/agg"},
        "s3_prefix_aggregate_results",
        id="nested-prefixes",
    ),
    pytest.param(
        {"s3_prefix_task_results": "sim/_engine/tasks"},
        "s3_prefix_task_results",
        id="engine-folder",
    ),
]


def params_with(conf: dict[str, Any], settings: Settings = SETTINGS) -> dict[str, Any]:
    """What a run's params are: the form's defaults with the trigger's conf on top."""
    params = ParamsDict(STUDY.form(settings))
    params.update(conf)
    return params.validate()


def plan_tasks(
    params: dict[str, Any], conf: dict[str, Any], settings: Settings = SETTINGS
) -> planning.Planned:
    """What plan_tasks does with a run's params before anything is written or started."""
    return planning.plan_run(STUDY, settings, params=params, conf=conf, run_id=RUN_ID, write=False)


@pytest.fixture
def python_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local backend checks that the study's command (`python`) exists on this machine."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def test_form_fields_have_titles_descriptions_and_sections_common_first() -> None:
    fields = STUDY.form(SETTINGS)
    assert tuple(fields) == FORM_NAMES
    for name, param in fields.items():
        assert param.schema.get("title"), name
        assert len(param.description or "") > 30, name
    sections = [p.schema.get("section") for p in fields.values()]
    # Grouped (each section contiguous), in this order; the common fields without a section,
    # so that they land in the form's default section, the one open when the form opens.
    assert list(dict.fromkeys(sections)) == [
        None,
        ber_form.SECTION_PRECISION,
        SECTION_ADVANCED,
    ]
    assert [n for n, p in fields.items() if "section" not in p.schema] == [
        "s3_bucket",
        "num_tasks",
        "ebn0_db",
    ]


def test_form_input_types() -> None:
    fields = STUDY.form(SETTINGS)
    assert fields["num_tasks"].schema["type"] == "integer"
    assert fields["ebn0_db"].schema["type"] == "array"
    assert fields["ebn0_db"].schema["items"]["type"] == "number"
    assert fields["allocation"].schema["enum"] == ["adaptive", "equal"]
    assert set(fields["allocation"].schema["values_display"]) == {"adaptive", "equal"}
    assert fields["s3_bucket"].value == "my-results"
    # cluster_size: a drop-down of auto and 1..MAX_CLUSTER_SIZE, submitted with its JSON type.
    assert fields["cluster_size"].value == "auto"
    assert fields["cluster_size"].schema["enum"] == ["auto", *range(1, 9)]
    assert set(fields["cluster_size"].schema["values_display"]) == {"auto", *map(str, range(1, 9))}
    # Each choice says how many tasks run at once: three BER tasks per c5.xlarge (study.yaml).
    assert fields["cluster_size"].schema["values_display"]["2"] == "2 (6 tasks at a time)"
    # No plain minimum/maximum on whole numbers: the UI would clamp instead of refusing.
    for name, param in fields.items():
        if param.schema.get("type") == "integer":
            assert "minimum" not in param.schema, name
            assert "maximum" not in param.schema, name


def test_defaults_are_valid() -> None:
    params = params_with({})
    planned = plan_tasks(params, {})
    assert len(planned.plan.items) == 200
    assert planned.engine.cluster_size == "auto"
    assert planned.engine.bucket == "my-results"
    inputs = ber_form.validate(params, bucket="my-results", results_prefix="sim", local=False)
    assert inputs.num_tasks == 200
    assert inputs.ebn0_db == (0, 2, 4, 6, 8, 10, 11, 12)
    assert inputs.s3_prefix_task_results == "sim/task_results"


@pytest.mark.parametrize("size", ["auto", 1, 4, 8], ids=str)
def test_cluster_size_takes_auto_or_a_whole_number(size: int | str) -> None:
    conf = {"cluster_size": size}
    assert plan_tasks(params_with(conf), conf).engine.cluster_size == size


@pytest.mark.parametrize(("conf", "field"), SCHEMA_REFUSALS)
def test_schema_refuses_bad_input_naming_the_field(conf: dict[str, Any], field: str) -> None:
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}:"):
        params_with(conf)


@pytest.mark.parametrize(("conf", "field"), SCHEMA_REFUSALS + PLAN_ONLY_REFUSALS)
def test_plan_tasks_refuses_bad_input_naming_the_field(conf: dict[str, Any], field: str) -> None:
    params = {**dict(ParamsDict(STUDY.form(SETTINGS)).validate()), **conf}
    with pytest.raises(StudyError) as caught:
        plan_tasks(params, conf)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def params_of_a_new_run(conf: dict[str, Any]) -> dict[str, Any]:
    """The params Airflow validates when it creates a run with `conf` (REST API, UI, CLI).

    As DAG.create_dagrun does it (airflow/serialization/definitions/dag.py): the DAG's params
    as the DAG processor serialized them, `deep_merge(conf)`, `validate()`. Keys the form does
    not have are kept, without a schema.
    """
    stored = BaseSerialization._serialize_params_dict(ParamsDict(STUDY.form(SETTINGS)))
    params = BaseSerialization._deserialize_params_dict(stored).deep_merge(conf)
    return params.validate()


@pytest.mark.parametrize(("conf", "field"), PLAN_ONLY_REFUSALS)
def test_plan_only_refusals_pass_the_schema(conf: dict[str, Any], field: str) -> None:
    """What the schema cannot catch reaches plan_tasks unchanged, and plan_tasks refuses it."""
    params = params_of_a_new_run(conf)

    assert {k: params[k] for k in conf} == conf
    with pytest.raises(StudyError) as caught:
        plan_tasks(params, conf)
    assert caught.value.field == field


def test_unknown_field_suggests_the_right_one() -> None:
    with pytest.raises(StudyError, match="did you mean 'num_tasks'"):
        plan_tasks(params_with({}), {"num_task": 20})


# The ECS task role may write only the results bucket under the study's prefix, sim/ for the
# BER study (study.yaml; cloudformation/ecs.yaml grants it).
OUTSIDE_THE_TASK_ROLE = [
    pytest.param({"s3_bucket": "someone-elses"}, "s3_bucket", id="other-bucket"),
    pytest.param(
        {"s3_prefix_task_results": "results/tasks"}, "s3_prefix_task_results", id="task-prefix"
    ),
    pytest.param(
        {"s3_prefix_aggregate_results": "simulations/agg"},
        "s3_prefix_aggregate_results",
        id="aggregate-prefix-sharing-letters",
    ),
]


@pytest.mark.usefixtures("python_on_path")
@pytest.mark.parametrize(("conf", "field"), OUTSIDE_THE_TASK_ROLE)
def test_ecs_backend_refuses_what_the_task_role_cannot_write(
    conf: dict[str, Any], field: str
) -> None:
    assert SETTINGS.results_bucket_only == "my-results"
    with pytest.raises(StudyError) as refused:
        plan_tasks(params_with(conf), conf)
    assert refused.value.field == field
    # The local backend writes to local folders: any bucket and prefix will do.
    assert LOCAL.results_bucket_only is None
    planned = plan_tasks(params_with(conf, LOCAL), conf, LOCAL)
    assert len(planned.plan.items) == 200


def test_ecs_backend_accepts_the_results_bucket_under_the_role_prefix() -> None:
    conf = {"s3_prefix_task_results": "sim/mine/tasks", "s3_prefix_aggregate_results": "sim/agg"}
    planned = plan_tasks(params_with(conf), conf)
    assert planned.plan.progress_uri == f"s3://my-results/sim/mine/tasks/{RUN_ID}/"
    assert planned.plan.outputs_uri == f"s3://my-results/sim/agg/{RUN_ID}/"


def test_the_checked_prefix_is_the_one_the_task_role_allows() -> None:
    """The study's stack (cloudformation/study.yaml) gets ResultsPrefix = study.yaml's
    results_prefix, and its task role may use only that prefix."""
    template = (settings_mod._REPO / "cloudformation" / "study.yaml").read_text()
    assert INFO.results_prefix == "sim"
    assert "s3:::${ResultsBucketName}/${ResultsPrefix}/*'" in template
    assert "- !Sub '${ResultsPrefix}/*'" in template  # the ListBucket condition
    assert ber_form.DEFAULTS["s3_prefix_task_results"].startswith(INFO.results_prefix + "/")
    assert ber_form.DEFAULTS["s3_prefix_aggregate_results"].startswith(INFO.results_prefix + "/")
