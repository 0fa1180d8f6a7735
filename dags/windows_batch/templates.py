"""Open Job Description job templates as studies: `dags/studies/<name>/template.yaml`.

The study folder is a job bundle, laid out as Deadline Cloud's are: `template.yaml` plus the
files it needs. A bundle that uses only the subset below runs unchanged.

Supported (jobtemplate-2023-09):
- job parameters INT, FLOAT, STRING and PATH with their constraints and UI hints: they become
  the trigger form (label -> title, groupLabel -> section, DROPDOWN_LIST and allowedValues ->
  a drop-down, MULTILINE_EDIT -> a multi-line text box, CHECK_BOX -> a check box, HIDDEN -> not
  shown). A form field has its job parameter's name. Values are checked by openjd-model's own
  rules at plan_tasks, and a refusal names the parameter;
- one step with a parameter space (INT, FLOAT, STRING, PATH ranges, `combination` with
  products and associations, and one CHUNK[INT] parameter with the TASK_CHUNKING extension),
  then optionally a second step that depends on it and has no parameter space: the aggregate;
- `script.actions.onRun` command and args with format strings, and its `timeout`;
- `script.embeddedFiles` of type TEXT (`{{Task.File.<name>}}`), runnable or not;
- PATH parameters: dataFlow OUT is a folder (or file) inside the task whose contents the engine
  publishes under the run's prefix when the task ends; IN comes from the form as an S3 location
  (locally, a local path will do) and is present before the command starts; INOUT is both, and
  what the task writes lands under the run's prefix, never over the inputs; a relative default
  names a file or folder of the bundle itself (Deadline's convention), which travels with it;
- `hostRequirements` the cluster meets (Windows, x86_64, vCPUs and memory within an instance);
- format string symbols Param.*, RawParam.*, Task.Param.*, Task.RawParam.*, Task.File.*,
  Session.WorkingDirectory.
Everything else (environments, other extensions, other step graphs, other symbols, host
requirements the cluster does not meet, a `combination` naming an unknown parameter) is refused
when the DAG file is parsed, by `load`, with the location in the template.

Parsing stays cheap: the DAG file reads the YAML and checks the subset in plain Python;
openjd-model (0.3 s to import) validates the template once per content, cached on disk, and is
otherwise only used when a run is planned.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from windows_batch import capacity
from windows_batch.catalog import TEMPLATE_FILE, StudyInfo, load_yaml
from windows_batch.engine_form import ENGINE_FIELDS, engine_fields, whole_range
from windows_batch.study import (
    Chunking,
    EmbeddedFile,
    Item,
    PathSpec,
    Plan,
    RunContext,
    StagedInput,
    StepSpec,
    StudyDefinitionError,
    StudyError,
    token,
)

if TYPE_CHECKING:
    from airflow.sdk import Param

    from windows_batch.settings import Settings

SPEC_VERSION = "jobtemplate-2023-09"
EXTENSIONS = ("TASK_CHUNKING",)
JOB_PARAM_TYPES = ("INT", "FLOAT", "STRING", "PATH")
TASK_PARAM_TYPES = ("INT", "FLOAT", "STRING", "PATH", "CHUNK[INT]")
ENGINE_TASK_IDS = ("plan_tasks", "scale_out", "scale_in", "finish")
_TOP_KEYS = {
    "specificationVersion",
    "$schema",
    "name",
    "description",
    "parameterDefinitions",
    "steps",
    "extensions",
}
_PARAM_KEYS = {
    "name",
    "type",
    "description",
    "default",
    "allowedValues",
    "minValue",
    "maxValue",
    "minLength",
    "maxLength",
    "userInterface",
    "objectType",
    "dataFlow",
}
_STEP_KEYS = {"name", "description", "parameterSpace", "script", "dependencies", "hostRequirements"}
_SCRIPT_KEYS = {"actions", "embeddedFiles"}
_ACTION_KEYS = {"command", "args", "timeout"}
_FILE_KEYS = {"name", "type", "data", "filename", "runnable"}
_SYMBOL_RE = re.compile(r"{{\s*(.*?)\s*}}")
_SUPPORTED_SYMBOL = re.compile(
    r"^(?:Param\.\w+|RawParam\.\w+|Task\.Param\.\w+|Task\.RawParam\.\w+|Task\.File\.\w+"
    r"|Session\.WorkingDirectory)$"
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WINDOWS = "windows"
_X86 = "x86_64"
_AMOUNTS = {"amount.worker.vcpu", "amount.worker.memory"}
_ATTRIBUTES = {"attr.worker.os.family": _WINDOWS, "attr.worker.cpu.arch": _X86}
BUNDLE_MAX_BYTES = 100 * 1024 * 1024
"""A bundle that travels with every run must stay small: scripts and sample data."""


def _fail(info: StudyInfo, where: str, message: str) -> StudyDefinitionError:
    return StudyDefinitionError(f"{info.folder / TEMPLATE_FILE}: {where}: {message}")


def _symbols(text: object) -> list[str]:
    return _SYMBOL_RE.findall(text) if isinstance(text, str) else []


def task_id_of(step_name: str) -> str:
    """An Airflow task id from an OpenJD step name: snake_case, never an engine task's id."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", step_name).strip("_").lower() or "run"
    return f"{slug}_step" if slug in ENGINE_TASK_IDS else slug[:200]


@dataclass(frozen=True)
class JobParam:
    """One job parameter, as the raw template gives it."""

    name: str
    type: str
    raw: Mapping[str, Any]

    @property
    def flow(self) -> str:
        return str(self.raw.get("dataFlow", "NONE")) if self.type == "PATH" else "NONE"

    @property
    def kind(self) -> str:
        return str(self.raw.get("objectType", "DIRECTORY"))

    @property
    def ui(self) -> Mapping[str, Any]:
        return self.raw.get("userInterface") or {}

    @property
    def hidden(self) -> bool:
        return self.ui.get("control") == "HIDDEN"

    @property
    def in_form(self) -> bool:
        """OUT paths are the engine's to choose; HIDDEN parameters keep their default."""
        return not self.hidden and not (self.type == "PATH" and self.flow == "OUT")


@dataclass
class TemplateStudy:
    """A job template study (see the module docstring): the Study interface."""

    info: StudyInfo
    text: str
    document: Mapping[str, Any]
    params: list[JobParam]
    sweep_name: str
    aggregate_name: str | None
    title: str = ""
    doc_md: str = ""
    sweep_task_id: str = "run"
    aggregate_task_id: str | None = None
    chunk_param: str | None = None
    _slots: int = field(default=1, repr=False)

    # ---- parse time -------------------------------------------------------------------

    def form(self, settings: Settings) -> dict[str, Param]:
        """The job parameters as form fields, then the engine's own fields."""
        fields = {p.name: _param_field(p, settings) for p in self.params if p.in_form}
        budget = self.info.max_failed_tasks.text() if self.info.max_failed_tasks else ""
        fields.update(
            engine_fields(
                settings,
                slots=self.slots(settings),
                include=[f for f in ENGINE_FIELDS if f != "s3_bucket"],
                budget_default=budget,
            )
        )
        return fields

    def slots(self, settings: Settings) -> int:
        """This study's tasks one instance runs at once."""
        return capacity.slots_for(settings, cpu=self.info.cpu, memory_mib=self.info.memory_mib)

    def exit_meaning(self, code: int) -> str:
        if code in self.info.final_exit_codes:
            return "final: the study says a retry would not help"
        return "failed"

    # ---- plan time --------------------------------------------------------------------

    def plan(
        self,
        params: Mapping[str, Any],
        *,
        conf: Mapping[str, Any] | None,
        context: RunContext,
        settings: Settings,
        list_files: Callable[[str], list[str]] | None = None,
    ) -> Plan:
        """Check the job parameter values with openjd-model and expand the steps into items.

        list_files(uri): the files under an input folder (one task per input file), as URIs.
        """
        om = _openjd()
        inputs = self._input_values(params, context=context)
        listing = self._listing(inputs, list_files=list_files, context=context)
        template = om.decode_job_template(
            template=self._document_for(listing), supported_extensions=list(EXTENSIONS)
        )
        values = self._openjd_values(om, template, inputs)
        job = om.create_job(job_template=template, job_parameter_values=values)
        steps = {str(step.name): step for step in job.steps}
        raw_values = {name: value.raw for name, value in inputs.items()}
        symbols = {f"Param.{n}": v.value for n, v in values.items()}
        symbols |= {f"RawParam.{n}": raw_values.get(n, v.value) for n, v in values.items()}
        sweep_step = steps[self.sweep_name]
        sweep = self._step_spec(
            self.sweep_name, self.sweep_task_id, inputs, symbols, context=context
        )
        items, chunk_param = self._expand(
            om, sweep_step, symbols, listing=listing, settings=settings
        )
        aggregate_step = aggregate = None
        if self.aggregate_name is not None:
            aggregate_step = self._step_spec(
                self.aggregate_name,
                str(self.aggregate_task_id),
                inputs,
                symbols,
                context=context,
                sees_outputs=True,
            )
            only = next(iter(om.StepParameterSpaceIterator(space=None)))
            aggregate = self._item(steps[self.aggregate_name], 0, only, symbols, listing=None)
        self._check_outputs(sweep, items)
        summary = (
            f"{sum(i.count for i in items)} work items in {len(items)} "
            f"{'chunks' if chunk_param else 'tasks'} of step {self.sweep_name!r}"
            + (f", then {self.aggregate_name!r}" if self.aggregate_name else "")
            + f"; outputs under {context.run_uri}"
        )
        return Plan(
            sweep=sweep,
            items=items,
            outputs_uri=context.run_uri,
            summary=summary,
            values=dict(params),
            chunking=Chunking(fixed=chunk_param is not None),
            aggregate_step=aggregate_step,
            aggregate=aggregate,
        )

    def summarize(self, read: Callable[[str], bytes | None]) -> str | None:
        """The aggregate's own summary (a `summary` line in its results.json), if it wrote one."""
        import json  # noqa: PLC0415

        for path in self._results_json_names():
            data = read(path)
            if data is None:
                continue
            try:
                document = json.loads(data)
            except ValueError:
                return None
            summary = document.get("summary") if isinstance(document, dict) else None
            return summary.strip()[:300] if isinstance(summary, str) and summary.strip() else None
        return None

    def _results_json_names(self) -> list[str]:
        """Where an aggregate's table may be: results.json in each of its output folders."""
        if self.aggregate_name is None:
            return []
        raw_step = next(s for s in self.document["steps"] if s.get("name") == self.aggregate_name)
        used = _referenced_params(raw_step)
        outputs = [p.name for p in self.params if p.flow in ("OUT", "INOUT")]
        return [f"{name}/results.json" for name in outputs if name in used] + [
            f"{name}/results.json" for name in outputs if name not in used
        ]

    # ---- helpers ----------------------------------------------------------------------

    def _document_for(self, listing: Mapping[str, list[str]] | None) -> dict[str, Any]:
        """The template as openjd-model decodes it: one task per input file becomes an INT
        range over the listing (an OpenJD list range holds at most 1024 values)."""
        import copy  # noqa: PLC0415

        document = copy.deepcopy(dict(self.document))
        each = self.info.for_each_file
        if each is not None and listing is not None:
            count = len(listing[each.input])
            for step in document["steps"]:
                space = step.get("parameterSpace") or {}
                for definition in space.get("taskParameterDefinitions") or []:
                    if definition.get("name") == each.parameter:
                        definition["type"] = "INT"
                        definition["range"] = f"0-{count - 1}"
        return document

    def _input_values(self, params: Mapping[str, Any], *, context: RunContext) -> dict[str, _Value]:
        """Each job parameter's value from the form: strings as openjd-model takes them, and
        for a PATH, what the task runner makes of it."""
        found: dict[str, _Value] = {}
        for param in self.params:
            if not param.in_form:
                default = param.raw.get("default")
                raw = "" if default is None else str(default)
            else:
                raw = _as_text(param, params.get(param.name, param.raw.get("default")))
            if param.type != "PATH":
                found[param.name] = _Value(raw=raw, value=raw)
                continue
            found[param.name] = self._path_value(param, raw, context=context)
        return found

    def _path_value(self, param: JobParam, raw: str, *, context: RunContext) -> _Value:
        name = param.name
        if param.flow == "OUT":
            filename = PurePosixPath(raw.replace("\\", "/")).name if param.kind == "FILE" else ""
            if param.kind == "FILE" and not filename:
                raise StudyError(name, "an OUT FILE parameter needs a default file name")
            spec = PathSpec(
                name=name,
                flow="OUT",
                kind=param.kind,
                out_uri=f"{context.run_uri}{name}/",
                filename=filename,
            )
            return _Value(raw=raw, value=token("path", name), spec=spec)
        if raw == "":
            return _Value(raw=raw, value="")
        if param.flow in ("IN", "INOUT"):
            spec = self._input_spec(param, raw, context=context)
            return _Value(raw=raw, value=token("path", name), spec=spec)
        # NONE: a plain path: a bundle file when relative, else a path where the task runs.
        if _is_relative(raw):
            bundle = self._bundle_path(param, raw)
            spec = PathSpec(name=name, flow="NONE", kind=param.kind, bundle=bundle)
            return _Value(raw=raw, value=token("path", name), spec=spec)
        return _Value(raw=raw, value=raw)

    def _input_spec(self, param: JobParam, raw: str, *, context: RunContext) -> PathSpec:
        name = param.name
        out_uri = f"{context.run_uri}{name}/" if param.flow == "INOUT" else ""
        if raw.startswith("s3://"):
            bucket, _, key = raw[len("s3://") :].partition("/")
            if not bucket or any(part in {".", ".."} for part in key.split("/")):
                raise StudyError(name, f"{raw!r} is not an S3 location s3://bucket/key")
            uri = raw if param.kind == "FILE" or raw.endswith("/") or not key else raw + "/"
            return PathSpec(name=name, flow=param.flow, kind=param.kind, uri=uri, out_uri=out_uri)
        if _is_relative(raw):
            bundle = self._bundle_path(param, raw)
            return PathSpec(
                name=name, flow=param.flow, kind=param.kind, bundle=bundle, out_uri=out_uri
            )
        if not context.local:
            raise StudyError(
                name,
                f"{raw!r} is a path on this machine; on AWS an input comes from S3: give an "
                "s3://bucket/prefix location the tasks may read",
            )
        path = Path(raw)
        if not path.exists():
            raise StudyError(name, f"{raw!r} does not exist on this machine")
        return PathSpec(
            name=name, flow=param.flow, kind=param.kind, uri=str(path.resolve()), out_uri=out_uri
        )

    def _bundle_path(self, param: JobParam, raw: str) -> str:
        relative = PurePosixPath(raw.replace("\\", "/"))
        if any(part == ".." for part in relative.parts):
            raise StudyError(param.name, f"{raw!r} climbs out of the study's folder")
        target = (self.info.folder / relative).resolve()
        if not target.is_relative_to(self.info.folder.resolve()) or not target.exists():
            raise StudyError(param.name, f"{raw!r} is not a file or folder of the study's bundle")
        return relative.as_posix()

    def _listing(
        self,
        inputs: Mapping[str, _Value],
        *,
        list_files: Callable[[str], list[str]] | None,
        context: RunContext,
    ) -> dict[str, list[str]] | None:
        each = self.info.for_each_file
        if each is None:
            return None
        spec = inputs[each.input].spec
        if spec is None:
            raise StudyError(each.input, "is empty: one task per input file needs a folder")
        if spec.bundle:
            folder = self.info.folder.resolve()
            base = (folder / spec.bundle).resolve()
            files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
            found = [str(p) for p in files]
            if not context.local:
                # A container cannot read this machine's files: it stages the run's copy.
                from windows_batch.manifest import bundle_uri  # noqa: PLC0415

                found = [bundle_uri(context) + p.relative_to(folder).as_posix() for p in files]
        else:
            if list_files is None:
                raise StudyError(each.input, "cannot be listed here")
            found = list_files(spec.uri)
        chosen = [f for f in found if fnmatch.fnmatch(f.rsplit("/", 1)[-1], each.pattern)]
        if not chosen:
            raise StudyError(
                each.input,
                f"no file matching {each.pattern!r} under {spec.uri or spec.bundle}: one task "
                "per input file needs at least one",
            )
        return {each.input: chosen}

    def _openjd_values(
        self, om: Any, template: Any, inputs: Mapping[str, _Value]
    ) -> dict[str, Any]:
        definitions = {str(d.name): d for d in template.parameterDefinitions or []}
        given = {}
        for name, value in inputs.items():
            definition = definitions[name]
            if definition.type.name != "PATH":
                try:
                    definition._check_constraints(value.value)
                except ValueError as exc:
                    raise StudyError(name, str(exc)) from None
            given[name] = value.value
        try:
            return dict(
                om.preprocess_job_parameters(
                    job_template=template,
                    job_parameter_values=given,
                    job_template_dir=Path(),
                    current_working_dir=Path(),
                    allow_job_template_dir_walk_up=True,
                )
            )
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            named = next((n for n in definitions if re.search(rf"\b{re.escape(n)}\b", first)), "")
            raise StudyError(named or self.sweep_task_id, first) from None

    def _step_spec(
        self,
        step_name: str,
        task_id: str,
        inputs: Mapping[str, _Value],
        symbols: Mapping[str, str],
        *,
        context: RunContext,
        sees_outputs: bool = False,
    ) -> StepSpec:
        raw_step = next(s for s in self.document["steps"] if s.get("name") == step_name)
        used = _referenced_params(raw_step)
        paths = []
        for name, value in inputs.items():
            if value.spec is not None and (
                name in used or (sees_outputs and value.spec.flow in ("OUT", "INOUT"))
            ):
                paths.append(value.spec)
        files = []
        shared: dict[str, str] = {}
        for raw_file in (raw_step.get("script") or {}).get("embeddedFiles") or []:
            if any(s.startswith("Task.") for s in _symbols(raw_file.get("data"))):
                continue  # resolved per item
            shared[raw_file["name"]] = _resolve_text(str(raw_file.get("data", "")), symbols)
            files.append(
                EmbeddedFile(
                    name=str(raw_file["name"]),
                    data=shared[raw_file["name"]],
                    filename=str(raw_file.get("filename", "")),
                    runnable=bool(raw_file.get("runnable", False)),
                )
            )
        timeout = (
            ((raw_step.get("script") or {}).get("actions") or {}).get("onRun", {}).get("timeout")
        )
        env = {"WB_ACTION_TIMEOUT_S": str(int(timeout))} if timeout else {}
        del context
        return StepSpec(
            task_id=task_id,
            files=tuple(files),
            paths=tuple(paths),
            bundle=any(p.bundle for p in paths),
            env=env,
            sees_outputs=sees_outputs,
        )

    def _expand(
        self,
        om: Any,
        step: Any,
        symbols: Mapping[str, str],
        *,
        listing: Mapping[str, list[str]] | None,
        settings: Settings,
    ) -> tuple[list[Item], str | None]:
        space = step.parameterSpace
        iterator = om.StepParameterSpaceIterator(space=space)
        chunk_param = iterator.chunks_parameter_name
        if iterator.chunks_adaptive:
            # targetRuntimeSeconds: the chunk size is fixed now, from the expected time of an
            # item, so that a chunk lasts about the target (at least one item).
            target = float(_chunk_definition(space, chunk_param).chunks.targetRuntimeSeconds)
            size = max(1, int(target // max(self.info.expected_item_s, 1e-9)))
            iterator = om.StepParameterSpaceIterator(space=space, chunks_task_count_override=size)
        count = len(iterator)
        limit = settings.max_items
        if count > limit:
            raise StudyError(
                self.sweep_task_id,
                f"{count} tasks in step {self.sweep_name!r}; at most {limit} per run",
            )
        items = [
            self._item(step, index, iterator[index], symbols, listing=listing)
            for index in range(count)
        ]
        return items, chunk_param

    def _item(
        self,
        step: Any,
        index: int,
        task_params: Mapping[str, Any],
        symbols: Mapping[str, str],
        *,
        listing: Mapping[str, list[str]] | None,
    ) -> Item:
        om = _openjd()
        table = om.SymbolTable()
        for key, value in symbols.items():
            table[key] = value
        each = self.info.for_each_file
        inputs: list[StagedInput] = []
        count = 1
        label_parts = []
        for name, value in task_params.items():
            text = str(value.value)
            if each is not None and listing is not None and name == each.parameter:
                uri = listing[each.input][int(text)]
                inputs.append(StagedInput(name=name, uri=uri))
                label_parts.append(f"{name}={uri.rsplit('/', 1)[-1]}")
                text = token("in", name)
            else:
                label_parts.append(f"{name}={text}")
            if value.type.name == "CHUNK_INT":
                count = len(om.IntRangeExpr.from_str(text))
            table[f"Task.Param.{name}"] = text
            table[f"Task.RawParam.{name}"] = text
        script = step.script
        item_files = []
        for embedded in script.embeddedFiles or []:
            table[f"Task.File.{embedded.name}"] = token("file", str(embedded.name))
            if any(s.startswith("Task.") for s in _symbols(str(embedded.data))):
                item_files.append((str(embedded.name), embedded))
        table["Session.WorkingDirectory"] = token("cwd")
        action = script.actions.onRun
        argv = [action.command.resolve(symtab=table)]
        argv += [arg.resolve(symtab=table) for arg in action.args or []]
        per_item = tuple(
            EmbeddedFile(
                name=name,
                data=embedded.data.resolve(symtab=table),
                filename=str(embedded.filename or ""),
                runnable=bool(embedded.runnable),
            )
            for name, embedded in item_files
        )
        return _ItemWithFiles(
            index=index,
            argv=tuple(argv),
            expected_s=self.info.expected_item_s * count,
            count=count,
            label=", ".join(label_parts),
            inputs=tuple(inputs),
            files=per_item,
        )

    def _check_outputs(self, sweep: StepSpec, items: Sequence[Item]) -> None:
        if len(items) <= 1:
            return
        for spec in sweep.paths:
            if spec.flow == "OUT" and spec.kind == "FILE":
                raise StudyError(
                    spec.name,
                    f"an OUT FILE would be overwritten by each of the {len(items)} tasks of "
                    f"step {self.sweep_name!r}: make it a DIRECTORY and name files per task",
                )


@dataclass(frozen=True)
class _ItemWithFiles(Item):
    """An item whose embedded files differ per task (they use Task.* symbols)."""

    files: tuple[EmbeddedFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.files:
            data["files"] = [
                {"name": f.name, "data": f.data, "filename": f.filename, "runnable": f.runnable}
                for f in self.files
            ]
        return data


@dataclass(frozen=True)
class _Value:
    """A job parameter's value: raw (as given), value (what openjd-model and the command
    get: a token for a PATH), spec (what the runner stages for a PATH)."""

    raw: str
    value: str
    spec: PathSpec | None = None


def _is_relative(raw: str) -> bool:
    return not (
        raw.startswith(("/", "\\", "s3://")) or re.match(r"^[A-Za-z]:[\\/]", raw) is not None
    )


def _resolve_text(text: str, symbols: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        return str(symbols[match.group(1)])

    return _SYMBOL_RE.sub(value, text)


def _referenced_params(raw_step: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    script = raw_step.get("script") or {}
    on_run = (script.get("actions") or {}).get("onRun") or {}
    texts = [on_run.get("command"), *(on_run.get("args") or [])]
    texts += [f.get("data") for f in script.get("embeddedFiles") or []]
    for text in texts:
        for symbol in _symbols(text):
            parts = symbol.split(".")
            if parts[0] in ("Param", "RawParam") and len(parts) == 2:
                found.add(parts[1])
    return found


def _chunk_definition(space: Any, name: str | None) -> Any:
    return space.taskParameterDefinitions[name]


def _as_text(param: JobParam, value: Any) -> str:
    """A form value as the string openjd-model takes (an INT given as 2.0 is "2")."""
    if value is None:
        return ""
    if param.type == "INT" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    if (
        param.type == "STRING"
        and param.ui.get("control") == "CHECK_BOX"
        and isinstance(value, bool)
    ):
        on, off = _check_box_values(param)
        return on if value else off
    if isinstance(value, bool):
        return str(value).upper()
    return str(value)


def _check_box_values(param: JobParam) -> tuple[str, str]:
    allowed = [str(v) for v in param.raw.get("allowedValues") or []]
    for on, off in (("TRUE", "FALSE"), ("YES", "NO"), ("ON", "OFF"), ("1", "0")):
        if {a.upper() for a in allowed} == {on, off}:
            return (
                next(a for a in allowed if a.upper() == on),
                next(a for a in allowed if a.upper() == off),
            )
    return ("TRUE", "FALSE")


def _param_field(param: JobParam, settings: Settings) -> Param:
    """The form field of one job parameter (type, bounds, choices, UI hints)."""
    from airflow.sdk import Param  # noqa: PLC0415

    ui = param.ui
    extra: dict[str, Any] = {"title": str(ui.get("label") or param.name)}
    if ui.get("groupLabel"):
        extra["section"] = str(ui["groupLabel"])
    if param.type == "INT":
        schema, value, note = _int_schema(param.raw)
    elif param.type == "FLOAT":
        schema, value, note = _float_schema(param.raw)
    elif param.type == "STRING" and ui.get("control") == "CHECK_BOX":
        on, _off = _check_box_values(param)
        default = param.raw.get("default")
        schema, value, note = {"type": "boolean"}, str(default).upper() == on.upper(), ""
    else:
        schema, value, note = _text_schema(param, settings)
    description = (str(param.raw.get("description") or "") + note).strip()
    if not description:
        description = f"Job parameter {param.name} ({param.type})."
    return Param(value, description=description, **schema, **extra)


def _int_schema(raw: Mapping[str, Any]) -> tuple[dict[str, Any], Any, str]:
    low, high, allowed = raw.get("minValue"), raw.get("maxValue"), raw.get("allowedValues")
    schema: dict[str, Any] = {"type": "integer"}
    if allowed:
        schema["enum"] = [int(v) for v in allowed]
    elif low is not None or high is not None:
        # Exclusive bounds: the form would clamp a number to minimum/maximum (engine_form).
        schema = whole_range(
            int(low) if low is not None else -(2**53), int(high) if high is not None else 2**53
        )
    default = raw.get("default")
    return schema, int(default) if default is not None else None, ""


def _float_schema(raw: Mapping[str, Any]) -> tuple[dict[str, Any], Any, str]:
    schema: dict[str, Any] = {"type": "number"}
    if raw.get("allowedValues"):
        schema["enum"] = [float(v) for v in raw["allowedValues"]]
    bounds = [
        f"at least {raw['minValue']}" if "minValue" in raw else "",
        f"at most {raw['maxValue']}" if "maxValue" in raw else "",
    ]
    # No minimum/maximum in the schema: the form would clamp a number to them when the field
    # loses focus; plan_tasks refuses out-of-range values with OpenJD's message instead.
    note = f" ({' and '.join(b for b in bounds if b)})" if any(bounds) else ""
    default = raw.get("default")
    return schema, float(default) if default is not None else None, note


def _text_schema(param: JobParam, settings: Settings) -> tuple[dict[str, Any], Any, str]:
    raw, allowed = param.raw, param.raw.get("allowedValues")
    schema: dict[str, Any] = {"type": "string"}
    if allowed:
        schema["enum"] = [str(v) for v in allowed]
    else:
        schema.update({k: int(raw[k]) for k in ("minLength", "maxLength") if k in raw})
    if param.type == "STRING" and param.ui.get("control") == "MULTILINE_EDIT":
        schema["format"] = "multiline"
    default = raw.get("default")
    value = str(default) if default is not None else ""
    if not value and not allowed and not int(raw.get("minLength", 0) or 0):
        # Airflow's form sends an empty field as null: an optional text must allow it.
        schema["type"] = ["string", "null"]
    note = ""
    if param.type == "PATH":
        where = "an S3 location such as s3://bucket/prefix/"
        if settings.local:
            where = "a local path (or s3:// under .local/buckets)"
        if param.flow in ("IN", "INOUT"):
            note += f" Input ({param.kind.lower()}): {where}."
            if param.flow == "INOUT":
                note += " What the tasks write lands under the run's own folder."
        if value and _is_relative(value):
            note += " The default names a file of the study's bundle."
    return schema, value, note


# ---- loading (parse time) ------------------------------------------------------------


def load(info: StudyInfo, settings: Settings) -> TemplateStudy:
    """Read and check a template study; raise StudyDefinitionError naming the location."""
    path = info.folder / TEMPLATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
        document = load_yaml(text)
    except (OSError, ValueError) as exc:
        raise StudyDefinitionError(f"{path}: cannot be read as YAML: {exc}") from None
    if not isinstance(document, dict):
        raise StudyDefinitionError(f"{path}: a job template is a mapping")
    params, sweep, aggregate, chunk = _check_subset(info, document, settings)
    _check_with_openjd(info, text, document)
    name = str(document.get("name", info.name))
    title = info.title or (name if "{{" not in name else info.name)
    description = str(document.get("description") or info.description or "")
    doc_md = (
        f"### {title}\n\n{description}\n\nJob template `{info.folder.name}/{TEMPLATE_FILE}`: "
        f"step **{sweep}**" + (f", then **{aggregate}**" if aggregate else "") + "."
    )
    return TemplateStudy(
        info=info,
        text=text,
        document=document,
        params=params,
        sweep_name=sweep,
        aggregate_name=aggregate,
        title=title,
        doc_md=doc_md,
        sweep_task_id=task_id_of(sweep),
        aggregate_task_id=task_id_of(aggregate) if aggregate else None,
        chunk_param=chunk,
    )


def _check_subset(
    info: StudyInfo, document: Mapping[str, Any], settings: Settings
) -> tuple[list[JobParam], str, str | None, str | None]:
    """Refuse what the engine does not support, naming where it is."""
    version = document.get("specificationVersion")
    if version != SPEC_VERSION:
        raise _fail(info, "specificationVersion", f"{version!r}: only {SPEC_VERSION} is supported")
    for key in document:
        if key not in _TOP_KEYS:
            what = "environments (a long-lived worker session)" if key == "jobEnvironments" else key
            raise _fail(info, key, f"{what} is not supported by this engine")
    extensions = document.get("extensions") or []
    for i, extension in enumerate(extensions):
        if extension not in EXTENSIONS:
            raise _fail(
                info, f"extensions[{i}]", f"{extension!r} is not supported (only {EXTENSIONS[0]})"
            )
    params = _check_params(info, document.get("parameterDefinitions") or [])
    names = {p.name for p in params}
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        raise _fail(info, "steps", "a template needs at least one step")
    if len(steps) > 2:
        raise _fail(
            info,
            "steps",
            f"{len(steps)} steps: this engine runs one sweep step, optionally followed by one "
            "aggregate step that depends on it",
        )
    sweep = steps[0]
    chunk = _check_step(info, sweep, 0, names, settings, aggregate=False)
    aggregate_name = None
    if len(steps) == 2:
        second = steps[1]
        _check_step(info, second, 1, names, settings, aggregate=True)
        deps = second.get("dependencies") or []
        if [d.get("dependsOn") for d in deps if isinstance(d, dict)] != [sweep.get("name")]:
            raise _fail(
                info,
                "steps[1].dependencies",
                f"the second step must depend on the first ({sweep.get('name')!r}) and on "
                "nothing else",
            )
        aggregate_name = str(second.get("name"))
    if sweep.get("dependencies"):
        raise _fail(info, "steps[0].dependencies", "the first step cannot depend on another")
    each = info.for_each_file
    if each is not None:
        _check_for_each(info, each, params, sweep)
    return params, str(sweep.get("name")), aggregate_name, chunk


def _check_params(info: StudyInfo, raw: object) -> list[JobParam]:
    if not isinstance(raw, list):
        raise _fail(info, "parameterDefinitions", "must be a list")
    params = []
    for i, definition in enumerate(raw):
        where = f"parameterDefinitions[{i}]"
        if not isinstance(definition, dict):
            raise _fail(info, where, "must be a mapping")
        name = str(definition.get("name", ""))
        kind = definition.get("type")
        if kind not in JOB_PARAM_TYPES:
            raise _fail(
                info,
                f"{where}.type",
                f"{kind!r} ({name}) is not supported; use one of {', '.join(JOB_PARAM_TYPES)}",
            )
        if name in ENGINE_FIELDS:
            raise _fail(
                info,
                f"{where}.name",
                f"{name!r} is one of the engine's own form fields ({', '.join(ENGINE_FIELDS)}); "
                "rename the parameter",
            )
        for key in definition:
            if key not in _PARAM_KEYS:
                raise _fail(info, f"{where}.{key}", "is not supported by this engine")
        params.append(JobParam(name=name, type=str(kind), raw=definition))
    return params


@dataclass(frozen=True)
class _Names:
    """The names a format string of one step may refer to."""

    params: set[str]
    task_params: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)


def _check_step(
    info: StudyInfo,
    step: object,
    index: int,
    params: set[str],
    settings: Settings,
    *,
    aggregate: bool,
) -> str | None:
    """Check one step; the name of its CHUNK[INT] parameter, if it has one."""
    where = f"steps[{index}]"
    if not isinstance(step, dict):
        raise _fail(info, where, "must be a mapping")
    for key in step:
        if key not in _STEP_KEYS:
            what = (
                "step environments (a long-lived worker session)"
                if key == "stepEnvironments"
                else key
            )
            raise _fail(info, f"{where}.{key}", f"{what} is not supported by this engine")
    if "hostRequirements" in step:
        _check_host(info, step["hostRequirements"], f"{where}.hostRequirements", settings)
    space = step.get("parameterSpace")
    if aggregate and space:
        raise _fail(
            info,
            f"{where}.parameterSpace",
            "the aggregate step runs once: it has no parameter space",
        )
    chunk, task_params = _check_space(info, space or {}, f"{where}.parameterSpace", params)
    script = step.get("script")
    if not isinstance(script, dict):
        raise _fail(info, f"{where}.script", "a step needs a script")
    _check_script(info, script, f"{where}.script", _Names(params=params, task_params=task_params))
    return chunk


def _check_space(
    info: StudyInfo, space: Mapping[str, Any], where: str, params: set[str]
) -> tuple[str | None, set[str]]:
    chunk = None
    task_params: set[str] = set()
    for i, definition in enumerate(space.get("taskParameterDefinitions") or []):
        kind = definition.get("type")
        loc = f"{where}.taskParameterDefinitions[{i}]"
        if kind not in TASK_PARAM_TYPES:
            raise _fail(info, f"{loc}.type", f"{kind!r} is not supported")
        if kind == "CHUNK[INT]":
            chunk = str(definition.get("name"))
        task_params.add(str(definition.get("name")))
        for symbol in _symbols(definition.get("range")):
            _check_symbol(info, symbol, f"{loc}.range", _Names(params=params))
    combination = space.get("combination")
    for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(combination or "")):
        if name not in task_params:
            raise _fail(
                info,
                f"{where}.combination",
                f"{name!r} is not a task parameter of this step "
                f"(known: {', '.join(sorted(task_params)) or 'none'})",
            )
    return chunk, task_params


def _check_script(info: StudyInfo, script: Mapping[str, Any], where: str, names: _Names) -> None:
    for key in script:
        if key not in _SCRIPT_KEYS:
            raise _fail(info, f"{where}.{key}", "is not supported by this engine")
    _check_files(info, script.get("embeddedFiles") or [], f"{where}.embeddedFiles", names)
    _check_actions(info, script.get("actions") or {}, f"{where}.actions", names)


def _check_files(info: StudyInfo, embedded_files: Any, where: str, names: _Names) -> None:
    names.files.update(str(f.get("name")) for f in embedded_files if isinstance(f, dict))
    for i, embedded in enumerate(embedded_files):
        loc = f"{where}[{i}]"
        if embedded.get("type") != "TEXT":
            raise _fail(info, f"{loc}.type", f"{embedded.get('type')!r}: only TEXT is supported")
        for key in embedded:
            if key not in _FILE_KEYS:
                raise _fail(info, f"{loc}.{key}", "is not supported by this engine")
        for symbol in _symbols(embedded.get("data")):
            _check_symbol(info, symbol, f"{loc}.data", names)


def _check_actions(info: StudyInfo, actions: Any, where: str, names: _Names) -> None:
    for key in actions:
        if key != "onRun":
            raise _fail(info, f"{where}.{key}", "only onRun is supported")
    on_run = actions.get("onRun")
    if not isinstance(on_run, dict):
        raise _fail(info, f"{where}.onRun", "a step needs an onRun action")
    for key in on_run:
        if key not in _ACTION_KEYS:
            what = "cancelation modes" if key == "cancelation" else key
            raise _fail(info, f"{where}.onRun.{key}", f"{what} is not supported")
    for i, text in enumerate([on_run.get("command"), *(on_run.get("args") or [])]):
        loc = f"{where}.onRun." + ("command" if i == 0 else f"args[{i - 1}]")
        for symbol in _symbols(text):
            _check_symbol(info, symbol, loc, names)


def _check_symbol(info: StudyInfo, symbol: str, where: str, names: _Names) -> None:
    if not _SUPPORTED_SYMBOL.match(symbol):
        raise _fail(
            info,
            where,
            f"{{{{{symbol}}}}} is not supported (Param.*, RawParam.*, Task.Param.*, "
            "Task.RawParam.*, Task.File.*, Session.WorkingDirectory)",
        )
    parts = symbol.split(".")
    if parts[0] in ("Param", "RawParam") and parts[1] not in names.params:
        raise _fail(info, where, f"{{{{{symbol}}}}}: no job parameter {parts[1]!r}")
    if parts[:2] in (["Task", "Param"], ["Task", "RawParam"]) and parts[2] not in names.task_params:
        raise _fail(info, where, f"{{{{{symbol}}}}}: no task parameter {parts[2]!r} in this step")
    if parts[:2] == ["Task", "File"] and parts[2] not in names.files:
        raise _fail(info, where, f"{{{{{symbol}}}}}: no embedded file {parts[2]!r} in this step")


def _check_host(info: StudyInfo, host: object, where: str, settings: Settings) -> None:
    """Host requirements must be met by every instance type of the cluster."""
    if not isinstance(host, dict):
        raise _fail(info, where, "must be a mapping")
    sizes = capacity.instance_sizes(settings.cost.instance_types)
    for i, amount in enumerate(host.get("amounts") or []):
        name = str(amount.get("name"))
        loc = f"{where}.amounts[{i}]"
        if name not in _AMOUNTS:
            if float(amount.get("min", 0) or 0) > 0:
                raise _fail(info, loc, f"{name} is not something this cluster offers")
            continue
        low = float(amount.get("min", 0) or 0)
        for instance_type, size in sizes.items():
            have = size.vcpus if name.endswith("vcpu") else size.memory_mib
            if low > have:
                raise _fail(
                    info,
                    loc,
                    f"{name} min {low:g} is more than {instance_type} has ({have:g}); the "
                    f"cluster runs {', '.join(sizes)}",
                )
    for i, attribute in enumerate(host.get("attributes") or []):
        name = str(attribute.get("name"))
        loc = f"{where}.attributes[{i}]"
        wanted = [str(v).lower() for v in (attribute.get("anyOf") or attribute.get("allOf") or [])]
        if name not in _ATTRIBUTES:
            raise _fail(info, loc, f"{name} is not an attribute this engine knows")
        if _ATTRIBUTES[name] not in wanted:
            raise _fail(info, loc, f"{name} {wanted}: this cluster's hosts are {_ATTRIBUTES[name]}")


def _check_for_each(
    info: StudyInfo, each: Any, params: list[JobParam], sweep: Mapping[str, Any]
) -> None:
    where = f"{info.folder / 'study.yaml'}: for_each_file"
    source = next((p for p in params if p.name == each.input), None)
    if source is None or source.type != "PATH" or source.flow not in ("IN", "INOUT"):
        raise StudyDefinitionError(f"{where}: input {each.input!r} is not an IN PATH job parameter")
    if source.kind != "DIRECTORY":
        raise StudyDefinitionError(f"{where}: input {each.input!r} must be a DIRECTORY")
    definitions = (sweep.get("parameterSpace") or {}).get("taskParameterDefinitions") or []
    found = next((d for d in definitions if d.get("name") == each.parameter), None)
    if found is None or found.get("type") != "PATH":
        raise StudyDefinitionError(
            f"{where}: parameter {each.parameter!r} is not a PATH task parameter of the first step"
        )


def _openjd() -> Any:
    import openjd.model  # noqa: PLC0415 (0.3 s: only when a run is planned or validated)

    return openjd.model


def _cache_dir() -> Path:
    root = os.environ.get("AIRFLOW__WINDOWS_BATCH__CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "windows-batch-cache"
    )
    return Path(root) / "openjd"


def _check_with_openjd(info: StudyInfo, text: str, document: Mapping[str, Any]) -> None:
    """openjd-model's own validation, once per template content (the verdict is cached)."""
    version = importlib.metadata.version("openjd-model")
    key = hashlib.sha256(f"{version}\n{SPEC_VERSION}\n{text}".encode()).hexdigest()
    cache = _cache_dir() / f"{key}.txt"
    try:
        verdict = cache.read_text(encoding="utf-8")
    except OSError:
        verdict = None
    if verdict is None:
        verdict = _validate(document)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(verdict, encoding="utf-8")
            tmp.replace(cache)
        except OSError:
            pass  # no cache: validated again next time
    if verdict != "ok":
        raise StudyDefinitionError(f"{info.folder / TEMPLATE_FILE}: {verdict}")


def _validate(document: Mapping[str, Any]) -> str:
    om = _openjd()
    try:
        om.decode_job_template(template=dict(document), supported_extensions=list(EXTENSIONS))
    except om.DecodeValidationError as exc:
        return " ".join(str(exc).split())
    return "ok"


def iter_symbols(document: Mapping[str, Any]) -> Iterator[str]:
    """Every format string symbol of a template (for tests and tools)."""
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        else:
            yield from _symbols(node)


def expected_chunk_s(items: Sequence[Item]) -> float:
    """The expected time of a chunk of items run one after the other."""
    return math.fsum(item.expected_s for item in items)
