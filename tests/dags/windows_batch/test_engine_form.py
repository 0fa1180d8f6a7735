"""engine_form.py: the engine's own form fields and the checks every study's form shares."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from windows_batch import settings as settings_mod
from windows_batch.catalog import FailureBudget
from windows_batch.engine_form import (
    ENGINE_FIELDS,
    SECTION_ADVANCED,
    check_bucket,
    check_engine_values,
    check_prefix,
    check_run_id,
    check_unknown,
    cluster_size_schema,
    engine_fields,
    whole,
    whole_range,
)
from windows_batch.study import StudyError

SETTINGS = settings_mod.load(
    {
        "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "my-results",
        "AIRFLOW__WINDOWS_BATCH__MAX_CLUSTER_SIZE": "8",
    }
)
LOCAL = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__BACKEND": "local"})


def engine_params(conf: dict[str, Any], *, slots: int = 2) -> dict[str, Any]:
    """The engine fields' defaults with `conf` on top, validated by their schema."""
    params = ParamsDict(engine_fields(SETTINGS, slots=slots))
    params.update(conf)
    return params.validate()


def test_engine_fields_bucket_first_then_the_advanced_section() -> None:
    fields = engine_fields(SETTINGS, slots=2)
    assert tuple(fields) == ENGINE_FIELDS
    for name, param in fields.items():
        assert param.schema.get("title"), name
        assert len(param.description or "") > 30, name
    assert "section" not in fields["s3_bucket"].schema
    assert {fields[n].schema.get("section") for n in ENGINE_FIELDS[1:]} == {SECTION_ADVANCED}
    assert fields["s3_bucket"].value == "my-results"
    shown = engine_fields(SETTINGS, slots=2, include=("cluster_size", "s3_bucket"))
    assert tuple(shown) == ("s3_bucket", "cluster_size")


def test_local_bucket_field_says_it_is_a_folder() -> None:
    assert ".local/buckets" in (engine_fields(LOCAL, slots=1)["s3_bucket"].description or "")
    assert ".local/buckets" not in (engine_fields(SETTINGS, slots=1)["s3_bucket"].description or "")


def test_cluster_size_is_a_drop_down_of_auto_and_the_groups_sizes() -> None:
    schema = cluster_size_schema(SETTINGS, slots=3)
    assert schema["enum"] == ["auto", *range(1, 9)]
    assert schema["values_display"]["4"] == "4 (12 tasks at a time)"
    assert set(schema["values_display"]) == {"auto", *map(str, range(1, 9))}
    assert engine_params({"cluster_size": 8})["cluster_size"] == 8
    with pytest.raises(ParamValidationError, match="Invalid input for param cluster_size:"):
        engine_params({"cluster_size": "4"})


def test_whole_numbers_have_exclusive_bounds_so_the_ui_does_not_clamp() -> None:
    assert whole_range(1, 10) == {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 11}
    for name, param in engine_fields(SETTINGS, slots=2).items():
        if param.schema.get("type") == "integer":
            assert "minimum" not in param.schema, name
            assert "maximum" not in param.schema, name


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(True, "True is not a whole number", id="bool"),
        pytest.param("3", "'3' is not a whole number", id="text"),
        pytest.param(2.5, "2.5 is not a whole number", id="fraction"),
        pytest.param(float("nan"), "nan is not a whole number", id="nan"),
        pytest.param(-1, "-1 is negative; it must be at least 1", id="negative"),
        pytest.param(0, "0 is too small; it must be at least 1", id="zero-below-one"),
        pytest.param(11, "11 is too large; it must be at most 10", id="too-large"),
    ],
)
def test_whole_refuses_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(StudyError) as refused:
        whole({"n": value}, "n", 1, 10)
    assert refused.value.field == "n"
    assert str(refused.value).startswith("n: ")
    assert message in str(refused.value)


def test_whole_takes_integral_floats() -> None:
    assert whole({"n": 4.0}, "n", 1, 10) == 4


@pytest.mark.parametrize("name", ["my-results", "a.b.c", "abc", "bucket-123", "x" * 63], ids=str)
def test_valid_bucket_names(name: str) -> None:
    assert check_bucket(name) == name
    engine_params({"s3_bucket": name})


@pytest.mark.parametrize(
    "name",
    [
        "",
        "ab",
        "x" * 64,
        "-abc",
        "abc-",
        "ABC",
        "a_b",
        "a..b",
        "10.0.0.1",
        "xn--abc",
        "abc-s3alias",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(StudyError, match=r"^s3_bucket: "):
        check_bucket(name)
    with pytest.raises(ParamValidationError, match="s3_bucket"):
        engine_params({"s3_bucket": name})


@pytest.mark.parametrize("prefix", ["sim", "sim/task_results", "a.b/c-d/e_f", "sim/.hidden"])
def test_usable_prefixes(prefix: str) -> None:
    assert check_prefix(prefix, "p") == prefix


@pytest.mark.parametrize(
    ("prefix", "needle"),
    [
        pytest.param("sim/../../etc", "has a '.' or '..' part", id="dotdot"),
        pytest.param("..", "has a '.' or '..' part", id="only-dotdot"),
        pytest.param("./sim", "has a '.' or '..' part", id="leading-dot"),
        pytest.param("/sim", "not a usable key prefix", id="leading-slash"),
        pytest.param("sim/", "not a usable key prefix", id="trailing-slash"),
        pytest.param("sim//x", "not a usable key prefix", id="double-slash"),
        pytest.param("sim x", "not a usable key prefix", id="blank"),
        pytest.param(7, "not a usable key prefix", id="number"),
    ],
)
def test_unusable_prefixes_are_refused_naming_the_field(prefix: object, needle: str) -> None:
    with pytest.raises(StudyError) as refused:
        check_prefix(prefix, "p")
    assert refused.value.field == "p"
    assert needle in str(refused.value)


def test_unknown_field_suggests_the_right_one() -> None:
    check_unknown({"cluster_size": 2}, ENGINE_FIELDS)
    check_unknown(None, ENGINE_FIELDS)
    with pytest.raises(StudyError, match="did you mean 'cluster_size'") as refused:
        check_unknown({"cluster_sise": 2}, ENGINE_FIELDS)
    assert refused.value.field == "cluster_sise"
    with pytest.raises(StudyError, match="unknown fields 'a', 'zz'"):
        check_unknown({"zz": 1, "a": 2}, ENGINE_FIELDS)


def test_engine_values_defaults() -> None:
    values = check_engine_values(engine_params({}), settings=SETTINGS, names=ENGINE_FIELDS)
    assert values.bucket == "my-results"
    assert values.cluster_size == "auto"
    assert (values.scale_out_timeout_s, values.scale_in_timeout_s) == (1800, 1200)
    assert values.budget is None
    # Fields a study's form does not show take their defaults.
    hidden = check_engine_values({}, settings=SETTINGS, names=())
    assert (hidden.bucket, hidden.cluster_size) == ("my-results", "auto")


@pytest.mark.parametrize(
    ("raw", "budget"),
    [("3", FailureBudget(count=3)), ("5%", FailureBudget(fraction=0.05)), ("", None)],
    ids=["count", "percent", "none"],
)
def test_failure_budget_field(raw: str, budget: FailureBudget | None) -> None:
    params = engine_params({"max_failed_tasks": raw})
    values = check_engine_values(params, settings=SETTINGS, names=ENGINE_FIELDS)
    assert values.budget == budget


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        pytest.param({"s3_bucket": "someone-elses"}, "s3_bucket", id="other-bucket-on-ecs"),
        pytest.param({"cluster_size": 9}, "cluster_size", id="cluster-above-max"),
        pytest.param({"cluster_size": "big"}, "cluster_size", id="cluster-other-string"),
        pytest.param({"scale_in_timeout_s": 5}, "scale_in_timeout_s", id="timeout-too-short"),
        pytest.param({"max_failed_tasks": "150%"}, "max_failed_tasks", id="budget-over-100"),
        pytest.param({"max_failed_tasks": "2.5"}, "max_failed_tasks", id="budget-fraction"),
    ],
)
def test_engine_values_refused_naming_the_field(conf: dict[str, Any], field: str) -> None:
    params = {**engine_params({}), **conf}
    with pytest.raises(StudyError) as refused:
        check_engine_values(params, settings=SETTINGS, names=ENGINE_FIELDS)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")


def test_any_bucket_on_the_local_backend() -> None:
    values = check_engine_values(
        {"s3_bucket": "someone-elses"}, settings=LOCAL, names=["s3_bucket"]
    )
    assert values.bucket == "someone-elses"


@pytest.mark.parametrize("run_id", ["", ".", "..", "a/b"])
def test_run_ids_that_cannot_name_a_folder_are_refused(run_id: str) -> None:
    with pytest.raises(StudyError, match=r"^run_id: "):
        check_run_id(run_id)
    assert check_run_id("manual__2026-01-02T03:04:05+00:00") == "manual__2026-01-02T03:04:05+00:00"
