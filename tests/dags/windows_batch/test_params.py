"""params.py: the trigger form (titles, sections, types) and every refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import BaseSerialization

from windows_batch import settings as settings_mod
from windows_batch.params import (
    PARAM_NAMES,
    SECTION_ADVANCED,
    SECTION_PRECISION,
    StudyError,
    check_bucket,
    form,
    validate_study,
)

SETTINGS = settings_mod.load(
    {
        "AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "my-results",
        "AIRFLOW__WINDOWS_BATCH__MAX_CLUSTER_SIZE": "8",
    }
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
    pytest.param({"num_tasks": 1025}, "num_tasks", id="too-many-tasks"),
    pytest.param({"seed": -1}, "seed", id="negative-seed"),
    pytest.param({"s3_prefix_task_results": "/sim//x/"}, "s3_prefix_task_results", id="bad-prefix"),
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
]


def params_with(conf: dict[str, Any]) -> dict[str, Any]:
    """What a run's params are: the form's defaults with the trigger's conf on top."""
    params = ParamsDict(form(SETTINGS))
    params.update(conf)
    return params.validate()


def test_form_fields_have_titles_descriptions_and_sections_common_first() -> None:
    fields = form(SETTINGS)
    assert tuple(fields) == PARAM_NAMES
    for name, param in fields.items():
        assert param.schema.get("title"), name
        assert len(param.description or "") > 30, name
    sections = [p.schema.get("section") for p in fields.values()]
    # Grouped (each section contiguous), in this order; the common fields without a section,
    # so that they land in the form's default section, the one open when the form opens.
    assert list(dict.fromkeys(sections)) == [None, SECTION_PRECISION, SECTION_ADVANCED]
    assert [n for n, p in fields.items() if "section" not in p.schema] == [
        "s3_bucket",
        "num_tasks",
        "ebn0_db",
    ]


def test_form_input_types() -> None:
    fields = form(SETTINGS)
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
    # No plain minimum/maximum on whole numbers: the UI would clamp instead of refusing.
    for name, param in fields.items():
        if param.schema.get("type") == "integer":
            assert "minimum" not in param.schema, name
            assert "maximum" not in param.schema, name


def test_defaults_are_valid() -> None:
    study, cluster = validate_study(params_with({}), conf={})
    assert study.num_tasks == 200
    assert study.ebn0_db == (0, 2, 4, 6, 8, 10, 11, 12)
    assert cluster == "auto"


@pytest.mark.parametrize("size", ["auto", 1, 4, 8], ids=str)
def test_cluster_size_takes_auto_or_a_whole_number(size: int | str) -> None:
    _, cluster = validate_study(params_with({"cluster_size": size}), conf={"cluster_size": size})
    assert cluster == size


@pytest.mark.parametrize(("conf", "field"), SCHEMA_REFUSALS)
def test_schema_refuses_bad_input_naming_the_field(conf: dict[str, Any], field: str) -> None:
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}:"):
        params_with(conf)


@pytest.mark.parametrize(("conf", "field"), SCHEMA_REFUSALS + PLAN_ONLY_REFUSALS)
def test_plan_tasks_refuses_bad_input_naming_the_field(conf: dict[str, Any], field: str) -> None:
    params = {**dict(ParamsDict(form(SETTINGS)).validate()), **conf}
    with pytest.raises(StudyError) as caught:
        validate_study(params, conf=conf, max_cluster_size=SETTINGS.max_cluster_size)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def params_of_a_new_run(conf: dict[str, Any]) -> dict[str, Any]:
    """The params Airflow validates when it creates a run with `conf` (REST API, UI, CLI).

    As DAG.create_dagrun does it (airflow/serialization/definitions/dag.py): the DAG's params
    as the DAG processor serialized them, `deep_merge(conf)`, `validate()`. Keys the form does
    not have are kept, without a schema.
    """
    stored = BaseSerialization._serialize_params_dict(ParamsDict(form(SETTINGS)))
    params = BaseSerialization._deserialize_params_dict(stored).deep_merge(conf)
    return params.validate()


@pytest.mark.parametrize(("conf", "field"), PLAN_ONLY_REFUSALS)
def test_plan_only_refusals_pass_the_schema(conf: dict[str, Any], field: str) -> None:
    """What the schema cannot catch reaches plan_tasks unchanged, and plan_tasks refuses it."""
    params = params_of_a_new_run(conf)

    assert {k: params[k] for k in conf} == conf
    with pytest.raises(StudyError) as caught:
        validate_study(params, conf=conf, max_cluster_size=SETTINGS.max_cluster_size)
    assert caught.value.field == field


def test_unknown_field_suggests_the_right_one() -> None:
    with pytest.raises(StudyError, match="did you mean 'num_tasks'"):
        validate_study(params_with({}), conf={"num_task": 20})


@pytest.mark.parametrize("name", ["my-results", "a.b.c", "abc", "bucket-123", "x" * 63], ids=str)
def test_valid_bucket_names(name: str) -> None:
    assert check_bucket(name) == name
    params_with({"s3_bucket": name})


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
        params_with({"s3_bucket": name})


# The ECS task role may write only the results bucket under sim/ (cloudformation/ecs.yaml).
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


@pytest.mark.parametrize(("conf", "field"), OUTSIDE_THE_TASK_ROLE)
def test_ecs_backend_refuses_what_the_task_role_cannot_write(
    conf: dict[str, Any], field: str
) -> None:
    assert SETTINGS.results_bucket_only == "my-results"
    with pytest.raises(StudyError) as refused:
        validate_study(
            params_with(conf), conf=conf, results_bucket_only=SETTINGS.results_bucket_only
        )
    assert refused.value.field == field
    # The local backend writes to local folders: any bucket and prefix will do.
    local = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__BACKEND": "local"})
    assert local.results_bucket_only is None
    validate_study(params_with(conf), conf=conf, results_bucket_only=local.results_bucket_only)


def test_ecs_backend_accepts_the_results_bucket_under_the_role_prefix() -> None:
    conf = {"s3_prefix_task_results": "sim/mine/tasks", "s3_prefix_aggregate_results": "sim/agg"}
    study, _ = validate_study(params_with(conf), conf=conf, results_bucket_only="my-results")
    assert study.s3_prefix_task_results == "sim/mine/tasks"


def test_the_checked_prefix_is_the_one_the_task_role_allows() -> None:
    template = (settings_mod._REPO / "cloudformation" / "ecs.yaml").read_text()
    prefix = settings_mod.RESULTS_PREFIX
    assert f"s3:::${{ResultsBucketName}}/{prefix}/*'" in template
    assert f"- {prefix}/*" in template  # the ListBucket condition
