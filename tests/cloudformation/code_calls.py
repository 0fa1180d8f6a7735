"""The AWS API actions the DAG and the Results view call, found in their source, not listed by hand.

What counts as a call (so that code moved to another module or file keeps being found):
- in every Python file under dags/ and plugins/, each `x.name(...)` or `name(...)` whose name is
  the snake_case name botocore gives an operation of a service (`describe_tasks`), and each
  `get_paginator("name")` / `get_waiter("name")` (a waiter calls the operation its model names);
- in the Amazon provider modules that code imports (and the provider modules those import), the
  same, for the functions that can be reached: the methods Airflow calls on an operator or
  trigger (`execute`, `execute_complete`, `on_kill`, `run`, ...) of the provider classes the code
  imports, with their base classes, then every function whose name one of them calls, and so on.
  A name-based call graph: it may find more than runs, never less, so it can excuse an action
  but not hide one the code does not call.

Operations map to IAM actions by their name under the service's IAM prefix, except where the
Service Authorization Reference gives another action (S3's list and HEAD calls), plus the
actions ECS authorizes with RunTask itself (iam:PassRole for the task definition's roles).
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import botocore.session
from botocore import xform_name

REPO = Path(__file__).resolve().parents[2]
CODE_FOLDERS = (REPO / "dags", REPO / "plugins")
PROVIDER = "airflow.providers.amazon."
# boto3 service name -> IAM service prefix (Service Authorization Reference).
IAM_PREFIX = {
    "autoscaling": "autoscaling",
    "cloudwatch": "cloudwatch",
    "ec2": "ec2",
    "ecs": "ecs",
    "iam": "iam",
    "kms": "kms",
    "logs": "logs",
    "mwaa": "airflow",
    "s3": "s3",
    "sqs": "sqs",
    "sts": "sts",
}
# Methods Airflow itself calls on an operator (task runner, triggerer resume, on_kill) or on a
# trigger (the triggerer): where the provider's behaviour starts.
AIRFLOW_ENTRY_METHODS = frozenset(
    {"execute", "execute_complete", "resume_execution", "on_kill", "run", "cleanup"}
)
# Service Authorization Reference, "Actions defined by Amazon S3": ListObjectsV2 (and
# ListObjects) and HeadBucket are authorized as s3:ListBucket, HeadObject as s3:GetObject.
S3_ACTION_OF = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "HeadObject": "s3:GetObject",
}
# ECS developer guide, "Amazon ECS task IAM role" and "task execution IAM role": whoever runs a
# task definition that names roles needs iam:PassRole on them (RunTask passes them to ECS).
IMPLIED_BY = {"ecs:RunTask": ("iam:PassRole",)}


@dataclass
class Calls:
    """Names a piece of code calls, and the paginators and waiters it asks a client for."""

    names: set[str] = field(default_factory=set)
    paginators: set[str] = field(default_factory=set)
    waiters: set[str] = field(default_factory=set)

    def add(self, node: ast.AST) -> None:
        for call in ast.walk(node):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            if name is None:
                continue
            self.names.add(name)
            first = call.args[0] if call.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                if name == "get_paginator":
                    self.paginators.add(first.value)
                elif name == "get_waiter":
                    self.waiters.add(first.value)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def our_files() -> list[Path]:
    return sorted(p for folder in CODE_FOLDERS for p in folder.rglob("*.py"))


def _imports(tree: ast.AST) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for every absolute import, also inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name


@cache
def _airflow_root() -> Path:
    spec = importlib.util.find_spec("airflow")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(module: str) -> Path | None:
    """The source file of an airflow.* module (without importing Airflow)."""
    base = _airflow_root().joinpath(*module.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def provider_modules(roots: Iterable[str]) -> dict[str, ast.Module]:
    """The provider modules `roots` name and every provider module they import, parsed."""
    found: dict[str, ast.Module] = {}
    todo = [m for m in roots if m.startswith(PROVIDER)]
    while todo:
        module = todo.pop()
        if module in found:
            continue
        path = module_file(module)
        if path is None:  # `from package import name`: name is not a module
            continue
        found[module] = _parse(path)
        for imported, name in _imports(found[module]):
            for candidate in (imported, f"{imported}.{name}" if name else None):
                if candidate and candidate.startswith(PROVIDER):
                    todo.append(candidate)
    return found


def _entry_functions(modules: dict[str, ast.Module], used: set[tuple[str, str]]) -> list[ast.AST]:
    """Airflow's entry methods of the used provider classes and of their provider bases."""
    entries: list[ast.AST] = []
    todo = list(used)
    seen: set[tuple[str, str]] = set()
    while todo:
        module, name = todo.pop()
        if (module, name) in seen or module not in modules:
            continue
        seen.add((module, name))
        tree = modules[module]
        cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if cls is None:
            continue
        entries += [
            n
            for n in cls.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.name in AIRFLOW_ENTRY_METHODS
        ]
        where = {alias: mod for mod, alias in _imports(tree) if alias}
        for base in cls.bases:
            base_name = base.id if isinstance(base, ast.Name) else None
            if base_name:
                todo.append((where.get(base_name, module), base_name))
    return entries


def reachable_calls() -> Calls:
    """What dags/ and plugins/ call, with the provider code they reach (module docstring)."""
    calls = Calls()
    used: set[tuple[str, str]] = set()
    roots: list[str] = []
    for path in our_files():
        tree = _parse(path)
        calls.add(tree)
        for module, name in _imports(tree):
            if module.startswith(PROVIDER):
                roots.append(module)
                if name:
                    used.add((module, name))
    modules = provider_modules(roots)
    by_name: dict[str, list[ast.AST]] = {}
    for tree in modules.values():
        for node in ast.walk(tree):
            # Entry methods are followed only for the classes actually used (below).
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name not in AIRFLOW_ENTRY_METHODS
            ):
                by_name.setdefault(node.name, []).append(node)
    for entry in _entry_functions(modules, used):
        calls.add(entry)
    done: set[str] = set()
    while todo := sorted(calls.names - done):
        for name in todo:
            done.add(name)
            for function in by_name.get(name, []):
                calls.add(function)
    return calls


@cache
def _operations(service: str) -> dict[str, str]:
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


@cache
def _waiter_operations(service: str) -> dict[str, str]:
    """snake_case waiter name -> the operation it polls (botocore's and the provider's waiters)."""
    found: dict[str, str] = {}
    session = botocore.session.get_session()
    try:
        model = session.get_waiter_model(service)
    except Exception:  # the service has no botocore waiters
        model = None
    if model is not None:
        for name in model.waiter_names:
            found[xform_name(name)] = model.get_waiter(name).operation
    provider = _airflow_root() / "providers" / "amazon" / "aws" / "waiters" / f"{service}.json"
    if provider.is_file():
        for name, waiter in json.loads(provider.read_text())["waiters"].items():
            found[name] = waiter["operation"]
    return found


def _iam_actions(prefix: str, operation: str) -> set[str]:
    action = S3_ACTION_OF.get(operation) if prefix == "s3" else None
    action = action or f"{prefix}:{operation}"
    return {action, *IMPLIED_BY.get(action, ())}


def called_actions(calls: Calls | None = None) -> set[str]:
    """The IAM actions of every AWS operation the code calls (see the module docstring)."""
    calls = calls or reachable_calls()
    actions: set[str] = set()
    for service, prefix in IAM_PREFIX.items():
        operations = _operations(service)
        for name in calls.names | calls.paginators:
            if name in operations:
                actions |= _iam_actions(prefix, operations[name])
        waiters = _waiter_operations(service)
        for name in calls.waiters:
            if name in waiters:
                actions |= _iam_actions(prefix, waiters[name])
    return actions
