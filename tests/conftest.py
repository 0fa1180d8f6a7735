"""Session fixtures shared across the test folders.

`migrated_db` is the one `airflow db migrate` of the session: tests/dags, tests/plugins and
tests/ui copy its database instead of migrating their own (each costs tens of seconds).
Under pytest-xdist (make test) each worker has its own; `work_unit` below decides which tests
run together on one worker.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_module(name: str, path: Path) -> ModuleType:
    """A file of tests/ or scripts/ (not packages) as module `name`, imported once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


# The other conftests and test files take these from sys.modules (`import local_airflow`).
moto_server = load_module("moto_server", REPO / "tests" / "cloudformation" / "moto_server.py")
local_airflow = load_module("local_airflow", REPO / "scripts" / "local_airflow.py")


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home whose SQLite metadata database is migrated (once per session).

    Copy its airflow.db and .migrated stamp into a new home: local_airflow.migrate then finds
    the database up to date and skips `airflow db migrate`.
    """
    home = tmp_path_factory.mktemp("airflow-migrated")
    local_airflow.migrate(local_airflow.airflow_env(home=home, local_root=home / "buckets"))
    return home


# Work units for `pytest -n N --dist loadscope` (make test). Each test file is one unit (its
# module fixtures are set up once), except: tests/ui/ is one unit (its files share
# `airflow standalone`, the browser and the finished run), and each test of these files of long
# tests that share no module fixture is its own unit, so the workers balance.
# (xdist's loadgroup cannot be used: with pytest 9 it no longer puts the group in the node ID.)
_ONE_UNIT_FOLDERS = ("tests/ui/",)
_ONE_UNIT_PER_TEST_FILES = (
    "tests/dags/test_ecs_end_to_end.py",
    "tests/dags/test_ecs_deadlines.py",
)


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: the tests of one unit run on one worker, in order."""
    path = nodeid.split("::", 1)[0]
    folder = next((f for f in _ONE_UNIT_FOLDERS if path.startswith(f)), None)
    if folder is not None:
        return folder
    return nodeid if path in _ONE_UNIT_PER_TEST_FILES else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadscope with work_unit's units (other --dist modes are xdist's own)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)
