"""Session fixtures shared across the test folders.

`migrated_db` is the one `airflow db migrate` of the session: tests/dags, tests/plugins and
tests/ui copy its database instead of migrating their own (each costs tens of seconds).
`lifecycle`, for tests/test_deploy.py and tests/test_destroy.py, is one moto server and its
deployments (test_deploy.Lifecycle): two image builds where the tests made three.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _deploy_helpers() -> ModuleType:
    """tests/ is not a package: test_deploy.py by its path, loaded once (conftest.py does it)."""
    name = "test_deploy_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "test_deploy.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


deploy_helpers = _deploy_helpers()


def _local_airflow() -> ModuleType:
    """scripts/local_airflow.py, imported once under its own name (the other conftests too)."""
    name = "local_airflow"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "local_airflow.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home whose SQLite metadata database is migrated (once per session).

    Copy its airflow.db and .migrated stamp into a new home: local_airflow.migrate then finds
    the database up to date and skips `airflow db migrate`.
    """
    local_airflow = _local_airflow()
    home = tmp_path_factory.mktemp("airflow-migrated")
    local_airflow.migrate(local_airflow.airflow_env(home=home, local_root=home / "buckets"))
    return home


@pytest.fixture(scope="session")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A moto server and the deployments test_deploy.Lifecycle hands out; stopped at the end."""
    root = tmp_path_factory.mktemp("lifecycle")
    with deploy_helpers.moto_server.running_server(
        root / "server.log", deploy_helpers.REGION
    ) as url:
        yield deploy_helpers.Lifecycle(url, root)


# Session fixtures that start something costly (a deployment lifecycle, `airflow standalone`
# with a browser, an in-process Airflow): their tests stay on one pytest-xdist worker.
_ONE_WORKER_SESSION_FIXTURES = ("lifecycle", "airflow_ui", "airflow")
# Module fixtures cheap enough to set up once per worker: test_deploy.py's and test_destroy.py's
# moto server (about 2 s), whose tests each use their own stack prefix.
_PER_WORKER_MODULE_FIXTURES = ("moto_url",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n N --dist loadgroup` (make test): tests sharing a costly fixture
    run on one worker, in collection order; every other test goes to whichever worker is free.

    A test using a session fixture of _ONE_WORKER_SESSION_FIXTURES is grouped by that fixture,
    one using a module-scoped fixture (but those of _PER_WORKER_MODULE_FIXTURES) by its module.
    Without xdist the marks change nothing.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        group = next((n for n in _ONE_WORKER_SESSION_FIXTURES if n in info.names_closure), None)
        if group is None and any(
            defs[-1].scope in ("module", "package", "class")
            for name, defs in info.name2fixturedefs.items()
            if name not in _PER_WORKER_MODULE_FIXTURES
        ):
            group = item.path.relative_to(REPO).as_posix()
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
