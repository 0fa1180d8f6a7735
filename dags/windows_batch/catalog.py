"""The studies a deployment runs: the folders under `dags/studies/`, and their `study.yaml`.

A study is a folder `dags/studies/<name>/` holding either `template.yaml` (an Open Job
Description job template: the folder is a job bundle, laid out as Deadline Cloud's are) or
`study.py` (a Python study). `study.yaml` beside it is optional and gives what the engine and
the deployer need to know that a job template does not say:

    dag_id: my-study            # default: the folder name
    image: my-image             # docker/<image>/ (default: docker/<name>/ if it exists), or a
                                # full image URI (it contains '/'), used as it is
    cpu: 1024                   # ECS CPU units of the task's container (1024 = one vCPU)
    memory_mib: 1536            # memory of the task's container
    results_prefix: studies/my-study   # the study's own key prefix in the results bucket
    final_exit_codes: [2]       # non-zero exits that are not retried (default: none)
    max_failed_tasks: 5%        # failure budget: a count or a percentage (default: none)
    title: My study             # the DAG's display name
    expected_item_s: 60         # a work item's expected seconds (estimate, chunk sizes)
    for_each_file:              # one task per file of an input folder (job templates)
      parameter: InputFile      #   a PATH task parameter of the first step
      input: Inputs             #   an IN DIRECTORY job parameter
      pattern: "*.csv"          #   file names to take (default: all)
    local_conf: {Batches: 10}   # form values `make run` uses on a laptop unless given

Pure Python with PyYAML: the deployer, the DAG file and the Results view all read it, and
none of them may pay for Airflow or openjd-model here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STUDIES_DIR = "studies"
TEMPLATE_FILE = "template.yaml"
PYTHON_FILE = "study.py"
SETTINGS_FILE = "study.yaml"
KINDS = ("template", "python")
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,30}$"
"""Study names: they become ECS task definition families, log stream prefixes and S3 keys."""
DEFAULT_CPU = 1024
DEFAULT_MEMORY_MIB = 1536
DEFAULT_EXPECTED_ITEM_S = 60.0
ECS_MAX_CPU = 10 * 1024
"""A container's CPU units: ECS allows up to 10 vCPUs' worth (10240) per container."""
_NAME_RE = re.compile(NAME_PATTERN)
_DAG_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")
_KNOWN_KEYS = {
    "dag_id",
    "image",
    "cpu",
    "memory_mib",
    "results_prefix",
    "final_exit_codes",
    "max_failed_tasks",
    "description",
    "title",
    "expected_item_s",
    "for_each_file",
    "local_conf",
}
RESERVED_PREFIXES = ("_engine",)


@dataclass(frozen=True)
class ForEachFile:
    """One task per file of an input folder: `parameter` (a PATH task parameter of the sweep
    step) takes, task by task, each file under the IN job parameter `input` that matches
    `pattern` (a glob on the file name)."""

    parameter: str
    input: str
    pattern: str = "*"


class CatalogError(ValueError):
    """A study folder or its study.yaml is not usable; the message names the file and field."""


@dataclass(frozen=True)
class FailureBudget:
    """How many failed tasks a run may have and still go on: a count, or a fraction of them."""

    count: int | None = None
    fraction: float | None = None

    def allowed(self, tasks: int) -> int:
        """Failed tasks allowed among `tasks`."""
        if self.fraction is not None:
            return int(self.fraction * tasks)
        return int(self.count or 0)

    def text(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return str(self.count)


def parse_budget(value: object, *, where: str) -> FailureBudget | None:
    """`5` (tasks) or `"5%"` (of the tasks) -> FailureBudget; None or "" -> None (no budget)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise CatalogError(f"{where}: {value!r} is not a count or a percentage such as 5%")
    match = _BUDGET_RE.match(str(value))
    if not match:
        raise CatalogError(f"{where}: {value!r} is not a count or a percentage such as 5%")
    number, percent = float(match.group(1)), match.group(2)
    if percent:
        if number > 100:
            raise CatalogError(f"{where}: {value!r} is more than 100%")
        return FailureBudget(fraction=number / 100)
    if not number.is_integer():
        raise CatalogError(f"{where}: {value!r} is not a whole number of tasks")
    return FailureBudget(count=int(number))


@dataclass(frozen=True)
class StudyInfo:
    """One study folder and its settings (see the module docstring)."""

    name: str
    kind: str
    folder: Path
    dag_id: str
    image_dir: Path | None
    image_uri: str | None
    cpu: int
    memory_mib: int
    results_prefix: str
    final_exit_codes: tuple[int, ...]
    max_failed_tasks: FailureBudget | None
    description: str = ""
    title: str = ""
    expected_item_s: float = DEFAULT_EXPECTED_ITEM_S
    for_each_file: ForEachFile | None = None
    local_conf: dict[str, Any] = field(default_factory=dict)

    @property
    def definition_file(self) -> Path:
        return self.folder / (TEMPLATE_FILE if self.kind == "template" else PYTHON_FILE)

    def task_family(self, prefix: str) -> str:
        """The ECS task definition family of this study in a deployment (`<prefix><name>`)."""
        return f"{prefix}{self.name}"


def _int(raw: Mapping[str, Any], key: str, default: int, *, low: int, high: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CatalogError(f"{where}: {key}: {value!r} is not a whole number in [{low}, {high}]")
    return value


def read_settings(folder: Path) -> dict[str, Any]:
    """The study's study.yaml as a mapping ({} when there is none)."""
    path = folder / SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 (safe)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: must be a mapping of settings")
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise CatalogError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    return raw


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML has it: several times faster, and parsing runs often."""


def load_yaml(text: str) -> Any:
    """YAML text -> Python objects, with the safe (C when available) loader."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)


def study_info(folder: Path, *, docker_dir: Path | None = None) -> StudyInfo:
    """Read one study folder; raise CatalogError naming what is wrong."""
    name = folder.name
    if not _NAME_RE.match(name):
        raise CatalogError(
            f"{folder}: the folder name {name!r} is not a study name: lowercase letters, digits "
            "and hyphens, starting with a letter, at most 31 characters"
        )
    has_template = (folder / TEMPLATE_FILE).is_file()
    has_python = (folder / PYTHON_FILE).is_file()
    if has_template == has_python:
        raise CatalogError(
            f"{folder}: a study holds exactly one of {TEMPLATE_FILE} (a job template) or "
            f"{PYTHON_FILE} (a Python study)"
        )
    raw = read_settings(folder)
    where = str(folder / SETTINGS_FILE)
    dag_id = raw.get("dag_id", name)
    if not isinstance(dag_id, str) or not _DAG_ID_RE.match(dag_id):
        raise CatalogError(f"{where}: dag_id: {dag_id!r} is not a usable DAG id")
    prefix = raw.get("results_prefix", f"studies/{name}")
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise CatalogError(
            f"{where}: results_prefix: {prefix!r} is not a key prefix such as studies/{name} "
            "(lowercase parts separated by single '/')"
        )
    if prefix.split("/")[0] in RESERVED_PREFIXES:
        raise CatalogError(f"{where}: results_prefix: {prefix!r} is reserved for the engine")
    image_dir, image_uri = _image(raw.get("image"), name=name, where=where, docker_dir=docker_dir)
    finals = raw.get("final_exit_codes", [])
    if not isinstance(finals, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c != 0 for c in finals
    ):
        raise CatalogError(f"{where}: final_exit_codes: {finals!r} is not a list of non-zero codes")
    for key in ("description", "title"):
        if not isinstance(raw.get(key, ""), str):
            raise CatalogError(f"{where}: {key}: must be text")
    expected = raw.get("expected_item_s", DEFAULT_EXPECTED_ITEM_S)
    if (
        isinstance(expected, bool)
        or not isinstance(expected, int | float)
        or not (0 < expected <= 7 * 24 * 3600)
    ):
        raise CatalogError(
            f"{where}: expected_item_s: {expected!r} is not a number of seconds in (0, 604800]"
        )
    return StudyInfo(
        name=name,
        kind="template" if has_template else "python",
        folder=folder,
        dag_id=dag_id,
        image_dir=image_dir,
        image_uri=image_uri,
        cpu=_int(raw, "cpu", DEFAULT_CPU, low=128, high=ECS_MAX_CPU, where=where),
        memory_mib=_int(
            raw, "memory_mib", DEFAULT_MEMORY_MIB, low=128, high=1024 * 1024, where=where
        ),
        results_prefix=prefix,
        final_exit_codes=tuple(sorted(set(finals))),
        max_failed_tasks=parse_budget(
            raw.get("max_failed_tasks"), where=f"{where}: max_failed_tasks"
        ),
        description=str(raw.get("description", "")),
        title=str(raw.get("title", "")),
        expected_item_s=float(expected),
        for_each_file=_for_each(raw.get("for_each_file"), where=where),
        local_conf=_local_conf(raw.get("local_conf"), where=where),
    )


def _local_conf(value: object, *, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CatalogError(f"{where}: local_conf: must be a mapping of form fields to values")
    return dict(value)


def _for_each(value: object, *, where: str) -> ForEachFile | None:
    if value is None:
        return None
    field_where = f"{where}: for_each_file"
    if not isinstance(value, dict) or set(value) - {"parameter", "input", "pattern"}:
        raise CatalogError(f"{field_where}: must be a mapping with parameter, input and pattern")
    parameter, source, pattern = (value.get(k) for k in ("parameter", "input", "pattern"))
    if not isinstance(parameter, str) or not isinstance(source, str) or not parameter or not source:
        raise CatalogError(
            f"{field_where}: needs parameter (a PATH task parameter) and input "
            "(an IN job parameter)"
        )
    if pattern is not None and (not isinstance(pattern, str) or not pattern or "/" in pattern):
        raise CatalogError(f"{field_where}: pattern: {pattern!r} is not a file name pattern")
    return ForEachFile(parameter=parameter, input=source, pattern=pattern or "*")


def _image(
    value: object, *, name: str, where: str, docker_dir: Path | None
) -> tuple[Path | None, str | None]:
    if value is not None and not isinstance(value, str):
        raise CatalogError(f"{where}: image: {value!r} is not a folder name or an image URI")
    if value and "/" in value:
        return None, value
    folder_name = value or name
    if docker_dir is None:
        return None, None
    candidate = docker_dir / folder_name
    if (candidate / "Dockerfile").is_file():
        return candidate, None
    if value:
        raise CatalogError(f"{where}: image: {candidate}/Dockerfile does not exist")
    return None, None


def discover(studies_dir: Path, *, docker_dir: Path | None = None) -> list[StudyInfo]:
    """Every study folder under `studies_dir` (the deployment's `dags/studies/`), by name;
    raise CatalogError on the first bad one (and on two with one DAG id or nested prefixes).

    Folders whose name starts with '.' or '_' are not studies (caches, scratch space).
    """
    found = [study_info(folder, docker_dir=docker_dir) for folder in study_folders(studies_dir)]
    check_unique(found)
    return found


def study_folders(studies_dir: Path) -> list[Path]:
    """The study folders under `studies_dir`, sorted by name."""
    root = studies_dir
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def check_unique(studies: list[StudyInfo]) -> None:
    """Refuse two studies with the same DAG id or nested results prefixes."""
    seen: dict[str, str] = {}
    for study in studies:
        if study.dag_id in seen:
            raise CatalogError(
                f"studies {seen[study.dag_id]} and {study.name} have the same dag_id {study.dag_id}"
            )
        seen[study.dag_id] = study.name
    for a in studies:
        for b in studies:
            if a.name < b.name and _nested(a.results_prefix, b.results_prefix):
                raise CatalogError(
                    f"studies {a.name} and {b.name} have nested results prefixes "
                    f"({a.results_prefix}, {b.results_prefix}): each study writes only its own"
                )


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
