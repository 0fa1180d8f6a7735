"""The study interface: what a study hands the engine, as plain data.

A study is one workload: its form, its plan, its command lines, its exit codes, its summary.
The engine is everything else: scaling, the fan-out in chunks, capacity waits and deadlines,
staging files in and out, results delivery, cost and the verdict. The engine never imports a
study by name; it finds them in `dags/studies/` (catalog.py) and loads each one as either a
job template (templates.py) or a Python module (python_study.py) that gives a `Study`.

A study says, at parse time (cheap: the DAG file is parsed every few seconds):
- `form(settings)`: its trigger form, the engine's own fields included (engine_form.py);
- `sweep_task_id` / `aggregate_task_id`: the Airflow task ids of its fan-out and its optional
  aggregate step; `title`, `doc_md` for the UI.
And at run time:
- `plan(params, conf=..., context=...)`: check the form (raise `StudyError` naming the field)
  and return a `Plan`: the work items (each one command line with its expected seconds), how
  they are chunked, an optional aggregate item, and where the run's outputs are;
- `summarize(read)`: one line about a finished run, from its published outputs;
- `exit_meaning(code)`: what an exit code of its commands means.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow.sdk import Param

    from windows_batch.catalog import FailureBudget, StudyInfo
    from windows_batch.settings import Settings

PLACEHOLDER = "@@wb:{kind}:{name}@@"
"""Placeholders the task runner replaces with paths that exist only where the task runs."""
TOKEN_RE = re.compile(r"@@wb:(path|file|in|cwd):([A-Za-z0-9_.-]*)@@")
FLOWS = ("NONE", "IN", "OUT", "INOUT")


def token(kind: str, name: str = "") -> str:
    """`@@wb:<kind>:<name>@@`: kind `path` (a PATH parameter), `file` (an embedded file),
    `in` (an item's own staged input), `cwd` (the task's working directory)."""
    return PLACEHOLDER.format(kind=kind, name=name)


class StudyError(ValueError):
    """Invalid trigger input; the message starts with the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class StudyDefinitionError(ValueError):
    """A study that cannot be run as written; the message names the file and the location."""


@dataclass(frozen=True)
class EmbeddedFile:
    """A file the task runner writes before the command runs (OpenJD `embeddedFiles`).

    data may hold tokens; filename: the file's name (default: a name the runner picks).
    """

    name: str
    data: str
    filename: str = ""
    runnable: bool = False


@dataclass(frozen=True)
class PathSpec:
    """A PATH the runner makes exist locally before the command, or publishes after it.

    name: the token name (`@@wb:path:<name>@@`); flow: NONE, IN, OUT or INOUT; kind: FILE or
    DIRECTORY; uri: IN/INOUT: where the input is (s3:// or, locally, a path); bundle: instead
    of uri, a path relative to the study's bundle (its folder), staged with the bundle;
    out_uri: OUT/INOUT: the s3:// prefix the task's outputs are published under;
    filename: OUT FILE: the file's name.
    """

    name: str
    flow: str
    kind: str = "DIRECTORY"
    uri: str = ""
    bundle: str = ""
    out_uri: str = ""
    filename: str = ""


@dataclass(frozen=True)
class StagedInput:
    """One input object of one item (one task per input file): fetched to `@@wb:in:<name>@@`."""

    name: str
    uri: str


@dataclass(frozen=True)
class Item:
    """One command line of the study: a work item, or (OpenJD CHUNK[INT]) a range of them.

    argv: the command and its arguments, with tokens for local paths; expected_s: the study's
    estimate of its run time (the estimate, chunk sizes, deadline checks); count: the work items
    it covers (1, or the size of a CHUNK[INT] range); label: a few words for logs.
    """

    index: int
    argv: tuple[str, ...]
    expected_s: float
    count: int = 1
    label: str = ""
    inputs: tuple[StagedInput, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "argv": list(self.argv),
            "expected_s": self.expected_s,
            "count": self.count,
        }
        if self.label:
            data["label"] = self.label
        if self.inputs:
            data["inputs"] = [{"name": i.name, "uri": i.uri} for i in self.inputs]
        return data


@dataclass(frozen=True)
class StepSpec:
    """What every item of one step shares: its task id, embedded files, PATHs, environment."""

    task_id: str
    files: tuple[EmbeddedFile, ...] = ()
    paths: tuple[PathSpec, ...] = ()
    bundle: bool = False
    """True: the study's folder is staged with the step (PATH defaults that name its files)."""
    env: Mapping[str, str] = field(default_factory=dict)
    sees_outputs: bool = False
    """True (an aggregate step): its OUT paths start with what the steps before published."""

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "files": [
                {"name": f.name, "data": f.data, "filename": f.filename, "runnable": f.runnable}
                for f in self.files
            ],
            "paths": [
                {
                    "name": p.name,
                    "flow": p.flow,
                    "kind": p.kind,
                    "uri": p.uri,
                    "bundle": p.bundle,
                    "out_uri": p.out_uri,
                    "filename": p.filename,
                }
                for p in self.paths
            ],
            "bundle": self.bundle,
            "env": dict(self.env),
            "sees_outputs": self.sees_outputs,
        }


@dataclass(frozen=True)
class Chunking:
    """How the engine groups items into chunks (one ECS task and one Airflow task each).

    fixed: the study fixed the chunks itself (OpenJD CHUNK[INT]: one item = one chunk);
    items_per_chunk: otherwise, the study's choice (0: the engine's: as few items per chunk as
    Airflow's map length allows, or about target_s seconds of work per chunk when given).
    """

    fixed: bool = False
    items_per_chunk: int = 0
    target_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    """A run's work, as the study planned it, and where its files go.

    outputs_uri: the s3:// prefix of the run's published outputs (the Results view lists it);
    progress_uri: where the run's per-task results land, if the study has such a folder;
    summary: one line for plan_tasks' log; values: the validated form (engine fields included);
    time_field: the form field that sets how long a task runs (named when a task cannot fit
    its deadline); published: the files (relative to outputs_uri) the aggregate publishes, if
    the study knows them (the Results view shows a plot and a table among them).
    """

    sweep: StepSpec
    items: Sequence[Item]
    outputs_uri: str
    summary: str
    values: Mapping[str, Any]
    chunking: Chunking = Chunking()
    aggregate_step: StepSpec | None = None
    aggregate: Item | None = None
    progress_uri: str = ""
    time_field: str = ""
    published: tuple[str, ...] = ()

    @property
    def work_items(self) -> int:
        return sum(item.count for item in self.items)


@dataclass(frozen=True)
class RunContext:
    """What a study needs to know about the run it plans: where its files may go.

    bucket: the results bucket of the run; results_prefix: the study's own key prefix;
    run_id: the Airflow run; local: True for the local backend.
    """

    run_id: str
    bucket: str
    results_prefix: str
    local: bool

    @property
    def run_uri(self) -> str:
        """`s3://<bucket>/<results_prefix>/runs/<run id>/`: the run's own output folder."""
        return f"s3://{self.bucket}/{self.results_prefix}/runs/{self.run_id}/"

    @property
    def engine_uri(self) -> str:
        """`s3://<bucket>/<results_prefix>/_engine/<run id>/`: the manifest and task markers."""
        return f"s3://{self.bucket}/{self.results_prefix}/_engine/{self.run_id}/"


class Study(Protocol):
    """What the engine asks of a study (see the module docstring)."""

    info: StudyInfo
    title: str
    doc_md: str
    sweep_task_id: str
    aggregate_task_id: str | None

    def form(self, settings: Settings) -> dict[str, Param]:
        """The trigger form: the study's fields and the engine's (engine_form.engine_fields)."""
        ...

    def plan(
        self,
        params: Mapping[str, Any],
        *,
        conf: Mapping[str, Any] | None,
        context: RunContext,
        settings: Settings,
    ) -> Plan:
        """Check the input (StudyError naming the field) and plan the run."""
        ...

    def summarize(self, read: Callable[[str], bytes | None]) -> str | None:
        """One line about the finished run; `read(name)` reads a file of its published outputs
        (a name relative to the plan's outputs_uri), None if there is no such file."""
        ...

    def exit_meaning(self, code: int) -> str:
        """What the study's exit code means, for the task's error message."""
        ...


def failure_budget(info: StudyInfo, values: Mapping[str, Any]) -> FailureBudget | None:
    """The run's failure budget: the form's `max_failed_tasks`, else study.yaml's."""
    from windows_batch.catalog import parse_budget  # noqa: PLC0415

    raw = values.get("max_failed_tasks")
    if raw not in (None, ""):
        return parse_budget(raw, where="max_failed_tasks")
    return info.max_failed_tasks


def spec_digest(data: Mapping[str, Any]) -> str:
    """A stable digest of a manifest entry: a done marker counts only for the same work."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
