"""Job template studies: every supported OpenJD feature, and every refusal naming its location.

Each test writes a study folder (template.yaml, study.yaml, bundle files) to tmp_path, loads it
as the DAG file does (templates.load: the subset check and openjd-model's own validation) and,
for the supported features, plans a run (openjd-model expands the steps into items).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from windows_batch import catalog, templates
from windows_batch import settings as settings_mod
from windows_batch.study import RunContext, StudyDefinitionError, StudyError, token

LOCAL = settings_mod.load(
    {"AIRFLOW__WINDOWS_BATCH__BACKEND": "local", "AIRFLOW__WINDOWS_BATCH__CACHE_DIR": "/tmp/x"}
)
ECS = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__S3_BUCKET": "results"})
RUN = "manual__2026-01-02T03:04:05+00:00"


def template(**changes: Any) -> dict[str, Any]:
    """A minimal valid template: one INT parameter, one step with a range, one OUT folder."""
    doc: dict[str, Any] = {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "Test",
        "parameterDefinitions": [
            {"name": "Count", "type": "INT", "default": 3, "minValue": 1, "maxValue": 50},
            {"name": "Out", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT"},
        ],
        "steps": [
            {
                "name": "Run It",
                "parameterSpace": {
                    "taskParameterDefinitions": [
                        {"name": "N", "type": "INT", "range": "1-{{Param.Count}}"}
                    ]
                },
                "script": {
                    "actions": {
                        "onRun": {"command": "python", "args": ["-c", "pass", "{{Task.Param.N}}"]}
                    }
                },
            }
        ],
    }
    doc.update(changes)
    # The step's range names Count: keep it among parameters a test replaces.
    names = [p.get("name") for p in doc["parameterDefinitions"]]
    if "Count" not in names and "BOOL" not in [p.get("type") for p in doc["parameterDefinitions"]]:
        doc["parameterDefinitions"].insert(0, {"name": "Count", "type": "INT", "default": 3})
    return doc


def study(
    tmp_path: Path,
    doc: dict[str, Any],
    *,
    name: str = "demo",
    settings: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> catalog.StudyInfo:
    folder = tmp_path / "studies" / name
    folder.mkdir(parents=True)
    (folder / "template.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    if settings:
        (folder / "study.yaml").write_text(yaml.safe_dump(settings))
    for relative, text in (files or {}).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return catalog.study_info(folder)


def load(tmp_path: Path, doc: dict[str, Any], **kwargs: Any) -> templates.TemplateStudy:
    return templates.load(study(tmp_path, doc, **kwargs), LOCAL)


def context(info: catalog.StudyInfo, *, local: bool = True) -> RunContext:
    return RunContext(run_id=RUN, bucket="results", results_prefix=info.results_prefix, local=local)


def plan(
    loaded: templates.TemplateStudy, params: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    defaults = {k: v.value for k, v in loaded.form(LOCAL).items()}
    local = kwargs.pop("local", True)
    return loaded.plan(
        {**defaults, **(params or {})},
        conf=params or {},
        context=context(loaded.info, local=local),
        settings=LOCAL if local else ECS,
        **kwargs,
    )


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__WINDOWS_BATCH__CACHE_DIR", str(tmp_path / "cache"))


# ---- the form --------------------------------------------------------------------------------


def test_job_parameters_become_the_form_with_their_ui_hints(tmp_path: Path) -> None:
    doc = template(
        parameterDefinitions=[
            {
                "name": "Frames",
                "type": "INT",
                "default": 10,
                "minValue": 1,
                "maxValue": 500,
                "description": "How many frames.",
                "userInterface": {"label": "Frame count", "groupLabel": "Render"},
            },
            {
                "name": "Quality",
                "type": "STRING",
                "default": "high",
                "allowedValues": ["low", "high"],
                "userInterface": {"control": "DROPDOWN_LIST"},
            },
            {
                "name": "Notes",
                "type": "STRING",
                "default": "",
                "maxLength": 100,
                "userInterface": {"control": "MULTILINE_EDIT"},
            },
            {
                "name": "Denoise",
                "type": "STRING",
                "default": "YES",
                "allowedValues": ["YES", "NO"],
                "userInterface": {"control": "CHECK_BOX"},
            },
            {"name": "Gain", "type": "FLOAT", "default": 1.5, "minValue": 0, "maxValue": 4},
            {
                "name": "Secret",
                "type": "STRING",
                "default": "x",
                "userInterface": {"control": "HIDDEN"},
            },
            {"name": "Out", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT"},
            {"name": "Scenes", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "IN"},
        ],
        steps=[
            {
                "name": "Render",
                "script": {"actions": {"onRun": {"command": "python", "args": ["-V"]}}},
            }
        ],
    )
    form = load(tmp_path, doc).form(LOCAL)
    assert list(form)[:7] == ["Count", "Frames", "Quality", "Notes", "Denoise", "Gain", "Scenes"]
    assert "Secret" not in form  # HIDDEN keeps its default
    assert "Out" not in form  # an OUT folder is the engine's to choose
    frames = form["Frames"].schema
    assert frames["title"] == "Frame count"
    assert frames["section"] == "Render"
    # Exclusive bounds: the UI does not clamp them, the server refuses out of range values.
    assert (frames["exclusiveMinimum"], frames["exclusiveMaximum"]) == (0, 501)
    assert form["Frames"].description == "How many frames."
    assert form["Quality"].schema["enum"] == ["low", "high"]
    assert form["Notes"].schema["format"] == "multiline"
    assert form["Denoise"].schema["type"] == "boolean"
    assert form["Denoise"].value is True
    assert form["Gain"].schema["type"] == "number"
    assert "at least 0 and at most 4" in form["Gain"].description
    assert "Input (directory)" in form["Scenes"].description
    # The engine's own fields come last, in their advanced section.
    assert list(form)[-4:] == [
        "cluster_size",
        "scale_out_timeout_s",
        "scale_in_timeout_s",
        "max_failed_tasks",
    ]


def test_a_parameter_named_like_an_engine_field_is_refused(tmp_path: Path) -> None:
    doc = template()
    doc["parameterDefinitions"].append({"name": "cluster_size", "type": "INT", "default": 1})
    with pytest.raises(
        StudyDefinitionError, match=r"parameterDefinitions\[2\]\.name: 'cluster_size'"
    ):
        load(tmp_path, doc)


# ---- plans -----------------------------------------------------------------------------------


def test_a_range_becomes_one_item_per_task_with_its_command_line(tmp_path: Path) -> None:
    loaded = load(tmp_path, template())
    assert loaded.sweep_task_id == "run_it"
    planned = plan(loaded, {"Count": 4})
    assert [item.argv for item in planned.items] == [
        ("python", "-c", "pass", str(n)) for n in range(1, 5)
    ]
    assert [item.index for item in planned.items] == [0, 1, 2, 3]
    assert planned.outputs_uri == f"s3://results/studies/demo/runs/{RUN}/"


def test_values_are_checked_by_openjd_and_the_refusal_names_the_parameter(tmp_path: Path) -> None:
    loaded = load(tmp_path, template())
    with pytest.raises(StudyError, match=r"^Count: .*at most 50"):
        plan(loaded, {"Count": 60})
    with pytest.raises(StudyError, match=r"^Count: "):
        plan(loaded, {"Count": 0})


def test_combinations_products_and_associations(tmp_path: Path) -> None:
    doc = template()
    doc["steps"][0]["parameterSpace"] = {
        "taskParameterDefinitions": [
            {"name": "A", "type": "INT", "range": "1-2"},
            {"name": "B", "type": "STRING", "range": ["x", "y"]},
            {"name": "C", "type": "FLOAT", "range": [0.5, 1.5]},
        ],
        "combination": "A * (B, C)",
    }
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = [
        "{{Task.Param.A}}",
        "{{Task.Param.B}}",
        "{{Task.Param.C}}",
    ]
    planned = plan(load(tmp_path, doc))
    assert [item.argv[1:] for item in planned.items] == [
        ("1", "x", "0.5"),
        ("1", "y", "1.5"),
        ("2", "x", "0.5"),
        ("2", "y", "1.5"),
    ]


def test_a_combination_naming_an_unknown_parameter_is_refused_at_load(tmp_path: Path) -> None:
    doc = template()
    doc["steps"][0]["parameterSpace"]["combination"] = "N * Missing"
    with pytest.raises(
        StudyDefinitionError, match=r"steps\[0\]\.parameterSpace\.combination: 'Missing'"
    ):
        load(tmp_path, doc)


def test_chunk_int_fixes_the_chunks_with_their_range_expressions(tmp_path: Path) -> None:
    doc = template(extensions=["TASK_CHUNKING"])
    doc["parameterDefinitions"].append({"name": "Size", "type": "INT", "default": 10})
    doc["steps"][0]["parameterSpace"] = {
        "taskParameterDefinitions": [
            {
                "name": "Frame",
                "type": "CHUNK[INT]",
                "range": "1-25",
                "chunks": {"defaultTaskCount": "{{Param.Size}}", "rangeConstraint": "CONTIGUOUS"},
            }
        ]
    }
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = ["{{Task.Param.Frame}}"]
    loaded = load(tmp_path, doc)
    planned = plan(loaded)
    assert planned.chunking.fixed
    # OpenJD balances the chunks: 25 frames in chunks of at most 10 are 9, 8 and 8.
    assert [item.argv[1] for item in planned.items] == ["1-9", "10-17", "18-25"]
    assert [item.count for item in planned.items] == [9, 8, 8]
    assert planned.work_items == 25


def test_a_target_runtime_sizes_chunks_from_the_expected_item_time(tmp_path: Path) -> None:
    doc = template(extensions=["TASK_CHUNKING"])
    doc["steps"][0]["parameterSpace"] = {
        "taskParameterDefinitions": [
            {
                "name": "Frame",
                "type": "CHUNK[INT]",
                "range": "1-100",
                "chunks": {
                    "defaultTaskCount": 1,
                    "targetRuntimeSeconds": 40,
                    "rangeConstraint": "CONTIGUOUS",
                },
            }
        ]
    }
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = ["{{Task.Param.Frame}}"]
    planned = plan(load(tmp_path, doc, settings={"expected_item_s": 4}))
    # 40 s of work at 4 s an item: chunks of 10.
    assert len(planned.items) == 10
    assert {item.count for item in planned.items} == {10}


def test_embedded_files_and_their_format_strings(tmp_path: Path) -> None:
    doc = template()
    doc["steps"][0]["script"] = {
        "embeddedFiles": [
            {
                "name": "Job",
                "type": "TEXT",
                "filename": "job.ps1",
                "runnable": True,
                "data": "Write-Output '{{Param.Count}} in {{Param.Out}}'",
            },
            {"name": "Per", "type": "TEXT", "data": "task {{Task.Param.N}}"},
        ],
        "actions": {
            "onRun": {
                "command": "powershell",
                "args": [
                    "-File",
                    "{{Task.File.Job}}",
                    "{{Task.File.Per}}",
                    "{{Session.WorkingDirectory}}",
                ],
            }
        },
    }
    loaded = load(tmp_path, doc)
    planned = plan(loaded, {"Count": 2}, local=False)
    shared = planned.sweep.files
    assert [(f.name, f.filename, f.runnable) for f in shared] == [("Job", "job.ps1", True)]
    assert shared[0].data == f"Write-Output '2 in {token('path', 'Out')}'"
    first = planned.items[0].to_json()
    assert first["argv"] == [
        "powershell",
        "-File",
        token("file", "Job"),
        token("file", "Per"),
        token("cwd"),
    ]
    # A file that uses a task's parameters is written per item.
    assert [f["data"] for f in first["files"]] == ["task 1"]


def test_path_parameters_stage_in_and_publish(tmp_path: Path) -> None:
    doc = template(
        parameterDefinitions=[
            {"name": "Scenes", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "IN"},
            {"name": "Cache", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "INOUT"},
            {"name": "Tool", "type": "PATH", "objectType": "FILE", "default": "bin/tool.py"},
            {"name": "Out", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT"},
        ]
    )
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = [
        "{{Param.Tool}}",
        "{{Param.Scenes}}",
        "{{Param.Cache}}",
        "{{Param.Out}}/frame-{{Task.Param.N}}.png",
    ]
    doc["steps"][0]["parameterSpace"]["taskParameterDefinitions"][0]["range"] = "1-2"
    loaded = load(tmp_path, doc, files={"bin/tool.py": "print(1)"})
    own = "s3://results/studies/demo"
    planned = plan(
        loaded,
        {"Scenes": f"{own}/inputs/scenes", "Cache": f"{own}/inputs/cache/"},
        local=False,
    )
    specs = {p.name: p for p in planned.sweep.paths}
    assert specs["Scenes"].uri == f"{own}/inputs/scenes/"
    assert specs["Cache"].out_uri == f"{own}/runs/{RUN}/Cache/"  # never over the inputs
    assert specs["Tool"].bundle == "bin/tool.py"
    assert specs["Out"].out_uri == f"{own}/runs/{RUN}/Out/"
    assert planned.sweep.bundle
    assert planned.items[1].argv[-1] == token("path", "Out") + "/frame-2.png"


def test_on_aws_an_input_is_an_s3_location_and_a_bundle_path_stays_in_the_bundle(
    tmp_path: Path,
) -> None:
    doc = template(
        parameterDefinitions=[
            {"name": "Scenes", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "IN"},
            {"name": "Tool", "type": "PATH", "objectType": "FILE", "default": "tool.py"},
        ]
    )
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = ["{{Param.Scenes}}", "{{Param.Tool}}"]
    loaded = load(tmp_path, doc, files={"tool.py": ""})
    with pytest.raises(StudyError, match=r"^Scenes: '/data/scenes' is a path on this machine"):
        plan(loaded, {"Scenes": "/data/scenes"}, local=False)
    with pytest.raises(StudyError, match=r"^Tool: '\.\./secret' climbs out"):
        plan(loaded, {"Scenes": "s3://results/studies/demo/in/", "Tool": "../secret"}, local=False)
    with pytest.raises(StudyError, match=r"^Tool: 'nope.py' is not a file or folder of the study"):
        plan(loaded, {"Scenes": "s3://results/studies/demo/in/", "Tool": "nope.py"}, local=False)


def test_an_out_file_that_every_task_would_overwrite_is_refused(tmp_path: Path) -> None:
    doc = template()
    doc["parameterDefinitions"].append(
        {
            "name": "Report",
            "type": "PATH",
            "objectType": "FILE",
            "dataFlow": "OUT",
            "default": "r.csv",
        }
    )
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = ["{{Param.Report}}"]
    with pytest.raises(StudyError, match=r"^Report: an OUT FILE would be overwritten by each"):
        plan(load(tmp_path, doc))


def test_an_aggregate_step_sees_the_outputs_of_the_sweep(tmp_path: Path) -> None:
    doc = template()
    doc["steps"].append(
        {
            "name": "Sum",
            "dependencies": [{"dependsOn": "Run It"}],
            "script": {
                "actions": {"onRun": {"command": "python", "args": ["sum.py", "{{Param.Count}}"]}}
            },
        }
    )
    loaded = load(tmp_path, doc)
    assert loaded.aggregate_task_id == "sum"
    planned = plan(loaded)
    assert planned.aggregate is not None
    assert planned.aggregate.argv == ("python", "sum.py", "3")
    assert planned.aggregate_step is not None
    assert planned.aggregate_step.sees_outputs
    assert [p.name for p in planned.aggregate_step.paths] == ["Out"]


def test_one_task_per_input_file(tmp_path: Path) -> None:
    doc = template(
        parameterDefinitions=[
            {"name": "Inputs", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "IN"},
            {"name": "Out", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT"},
        ]
    )
    doc["steps"][0]["parameterSpace"] = {
        "taskParameterDefinitions": [
            {"name": "File", "type": "PATH", "range": ["{{RawParam.Inputs}}"]},
            {"name": "Pass", "type": "INT", "range": "1-2"},
        ]
    }
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = [
        "{{Task.Param.File}}",
        "{{Task.Param.Pass}}",
    ]
    loaded = load(
        tmp_path,
        doc,
        settings={"for_each_file": {"parameter": "File", "input": "Inputs", "pattern": "*.csv"}},
    )
    listed = [f"s3://results/studies/demo/in/{n}" for n in ("a.csv", "b.csv", "notes.txt")]
    planned = plan(
        loaded,
        {"Inputs": "s3://results/studies/demo/in/"},
        local=False,
        list_files=lambda uri: listed if uri == "s3://results/studies/demo/in/" else [],
    )
    assert [(i.inputs[0].uri.rsplit("/", 1)[-1], i.argv[2]) for i in planned.items] == [
        ("a.csv", "1"),
        ("a.csv", "2"),
        ("b.csv", "1"),
        ("b.csv", "2"),
    ]
    assert {i.argv[1] for i in planned.items} == {token("in", "File")}


def test_one_task_per_file_beyond_openjds_list_limit(tmp_path: Path) -> None:
    """An OpenJD list range holds at most 1024 values; the listing becomes an INT range."""
    doc = template(
        parameterDefinitions=[
            {"name": "Inputs", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "IN"},
        ]
    )
    doc["steps"][0]["parameterSpace"] = {
        "taskParameterDefinitions": [
            {"name": "F", "type": "PATH", "range": ["{{RawParam.Inputs}}"]}
        ]
    }
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = ["{{Task.Param.F}}"]
    loaded = load(tmp_path, doc, settings={"for_each_file": {"parameter": "F", "input": "Inputs"}})
    listed = [f"s3://results/studies/demo/in/{n:05d}.dat" for n in range(3000)]
    planned = plan(
        loaded,
        {"Inputs": "s3://results/studies/demo/in/"},
        local=False,
        list_files=lambda _: listed,
    )
    assert len(planned.items) == 3000
    assert planned.items[2999].inputs[0].uri == listed[2999]


def test_host_requirements_the_cluster_meets_are_accepted(tmp_path: Path) -> None:
    doc = template()
    doc["steps"][0]["hostRequirements"] = {
        "amounts": [
            {"name": "amount.worker.vcpu", "min": 2},
            {"name": "amount.worker.memory", "min": 4096},
        ],
        "attributes": [{"name": "attr.worker.os.family", "anyOf": ["windows"]}],
    }
    load(tmp_path, doc)


# ---- refusals at load (the DAG file) ---------------------------------------------------------


def _with_step(**step_changes: Any) -> dict[str, Any]:
    doc = template()
    doc["steps"][0].update(step_changes)
    return doc


REFUSALS = [
    pytest.param(
        template(jobEnvironments=[{"name": "E"}]),
        r"jobEnvironments: environments",
        id="environments",
    ),
    pytest.param(template(extensions=["EXPR"]), r"extensions\[0\]: 'EXPR'", id="other-extension"),
    pytest.param(
        template(specificationVersion="jobtemplate-2099-01"),
        r"specificationVersion: 'jobtemplate-2099-01'",
        id="spec-version",
    ),
    pytest.param(
        _with_step(stepEnvironments=[{"name": "E"}]), r"steps\[0\]\.stepEnvironments", id="step-env"
    ),
    pytest.param(
        _with_step(hostRequirements={"amounts": [{"name": "amount.worker.vcpu", "min": 64}]}),
        r"steps\[0\]\.hostRequirements\.amounts\[0\]: amount\.worker\.vcpu min 64 is more than",
        id="host-too-big",
    ),
    pytest.param(
        _with_step(
            hostRequirements={"attributes": [{"name": "attr.worker.os.family", "anyOf": ["linux"]}]}
        ),
        r"hostRequirements\.attributes\[0\]: attr\.worker\.os\.family \['linux'\]",
        id="host-linux",
    ),
    pytest.param(
        _with_step(hostRequirements={"amounts": [{"name": "amount.worker.gpu", "min": 1}]}),
        r"amount\.worker\.gpu is not something this cluster offers",
        id="host-gpu",
    ),
    pytest.param(
        _with_step(
            script={
                "actions": {
                    "onRun": {"command": "x", "cancelation": {"mode": "NOTIFY_THEN_TERMINATE"}}
                }
            }
        ),
        r"steps\[0\]\.script\.actions\.onRun\.cancelation: cancelation modes",
        id="cancelation",
    ),
    pytest.param(
        _with_step(script={"actions": {"onRun": {"command": "x"}, "onEnter": {"command": "y"}}}),
        r"steps\[0\]\.script\.actions\.onEnter: only onRun",
        id="on-enter",
    ),
    pytest.param(
        _with_step(
            script={
                "embeddedFiles": [{"name": "F", "type": "BINARY", "data": "x"}],
                "actions": {"onRun": {"command": "x"}},
            }
        ),
        r"embeddedFiles\[0\]\.type: 'BINARY': only TEXT",
        id="embedded-not-text",
    ),
    pytest.param(
        _with_step(
            script={
                "actions": {"onRun": {"command": "x", "args": ["{{Session.PathMappingRulesFile}}"]}}
            }
        ),
        r"args\[0\]: \{\{Session\.PathMappingRulesFile\}\} is not supported",
        id="unsupported-symbol",
    ),
    pytest.param(
        _with_step(script={"actions": {"onRun": {"command": "x", "args": ["{{Task.File.Nope}}"]}}}),
        r"args\[0\]: \{\{Task\.File\.Nope\}\}: no embedded file 'Nope'",
        id="unknown-file",
    ),
    pytest.param(
        template(
            parameterDefinitions=[{"name": "Flag", "type": "BOOL", "default": True}],
        ),
        r"parameterDefinitions\[0\]\.type: 'BOOL' \(Flag\) is not supported",
        id="bool-parameter",
    ),
]


@pytest.mark.parametrize(("doc", "where"), REFUSALS)
def test_what_the_engine_does_not_support_is_refused_naming_its_location(
    tmp_path: Path, doc: dict[str, Any], where: str
) -> None:
    with pytest.raises(StudyDefinitionError, match=where) as refused:
        load(tmp_path, doc)
    assert str(tmp_path / "studies" / "demo" / "template.yaml") in str(refused.value)


def test_step_graphs_other_than_a_sweep_and_one_aggregate_are_refused(tmp_path: Path) -> None:
    step = template()["steps"][0]
    three = template(steps=[step, {**step, "name": "B"}, {**step, "name": "C"}])
    with pytest.raises(StudyDefinitionError, match=r"steps: 3 steps"):
        load(tmp_path / "a", three)
    once = {"name": "B", "script": {"actions": {"onRun": {"command": "python"}}}}
    independent = template(steps=[step, once])
    with pytest.raises(StudyDefinitionError, match=r"steps\[1\]\.dependencies: the second step"):
        load(tmp_path / "b", independent)
    with_space = template(
        steps=[step, {**step, "name": "B", "dependencies": [{"dependsOn": "Run It"}]}]
    )
    with pytest.raises(StudyDefinitionError, match=r"steps\[1\]\.parameterSpace: the aggregate"):
        load(tmp_path / "c", with_space)


def test_openjd_models_own_refusals_name_their_location(tmp_path: Path) -> None:
    doc = template()
    doc["steps"][0]["script"]["actions"]["onRun"]["args"] = ["{{Task.Param.Nn}}"]
    with pytest.raises(StudyDefinitionError, match=r"no task parameter 'Nn'"):
        load(tmp_path / "ours", doc)
    # A PATH parameter's value is not available in a parameter range (openjd-model says so).
    doc = template(
        parameterDefinitions=[{"name": "Dir", "type": "PATH", "dataFlow": "IN"}],
    )
    doc["steps"][0]["parameterSpace"]["taskParameterDefinitions"][0] = {
        "name": "N",
        "type": "STRING",
        "range": ["{{Param.Dir}}"],
    }
    with pytest.raises(StudyDefinitionError, match=r"Variable Param\.Dir does not exist"):
        load(tmp_path / "openjd", doc)


def test_openjd_validation_is_paid_once_per_template_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = templates._validate

    def counting(document: Any) -> str:
        calls.append(json.dumps(document, sort_keys=True))
        return real(document)

    monkeypatch.setattr(templates, "_validate", counting)
    info = study(tmp_path, template())
    templates.load(info, LOCAL)
    templates.load(info, LOCAL)
    assert len(calls) == 1
    (info.folder / "template.yaml").write_text(yaml.safe_dump(template(name="Changed")))
    templates.load(info, LOCAL)
    assert len(calls) == 2


def test_the_engine_names_no_study() -> None:
    """The engine's code names no study: no bersim, Eb/N0, bits, BER or Octave in it."""
    engine = Path(templates.__file__).parent
    plugins = engine.parents[1] / "plugins"
    words = re.compile(r"bersim|eb/?n0|octave|\bber\b|\bbits\b", re.IGNORECASE)
    found = [
        f"{path.relative_to(engine.parents[1])}:{n}"
        for root in (engine, plugins)
        for path in sorted(root.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if words.search(line)
    ]
    assert found == []
