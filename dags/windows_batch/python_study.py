"""Python studies: `dags/studies/<name>/study.py`, for workloads whose plan needs code.

The module defines `load(info, settings) -> Study` (study.py describes the interface). It is
imported as the package `studies.<name>` when the folder name is a Python identifier (so that
its own modules import each other as `from . import plan`), else from its file under a private
module name; either way once per process.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

from windows_batch.catalog import PYTHON_FILE
from windows_batch.study import StudyDefinitionError

if TYPE_CHECKING:
    from types import ModuleType

    from windows_batch.catalog import StudyInfo
    from windows_batch.settings import Settings
    from windows_batch.study import Study


def module_of(info: StudyInfo) -> ModuleType:
    """The study's `study.py` module (imported once)."""
    name = info.folder.name
    if name.isidentifier() and info.folder.parent.name == "studies":
        parent = str(info.folder.parent.parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)
        return importlib.import_module(f"studies.{name}.study")
    module_name = f"windows_batch_study_{name.replace('-', '_')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(
        module_name, info.folder / PYTHON_FILE, submodule_search_locations=[str(info.folder)]
    )
    if spec is None or spec.loader is None:
        raise StudyDefinitionError(f"{info.folder / PYTHON_FILE}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load(info: StudyInfo, settings: Settings) -> Study:
    """The study its module's `load(info, settings)` returns."""
    path = info.folder / PYTHON_FILE
    try:
        module = module_of(info)
    except StudyDefinitionError:
        raise
    except Exception as exc:  # any import error is the study's: name the file
        raise StudyDefinitionError(
            f"{path}: cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    loader: Any = getattr(module, "load", None)
    if not callable(loader):
        raise StudyDefinitionError(f"{path}: defines no load(info, settings) function")
    study = loader(info, settings)
    for attribute in ("form", "plan", "summarize", "sweep_task_id"):
        if not hasattr(study, attribute):
            raise StudyDefinitionError(f"{path}: load() returned no study (it lacks {attribute})")
    return study
