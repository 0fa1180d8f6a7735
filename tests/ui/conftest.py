"""Fixtures for the browser tests: a real local Airflow and headless Debian Chromium.

`airflow_ui` starts `airflow standalone` (scripts/local_airflow.py) with the DAG's local backend,
in a temporary AIRFLOW_HOME and a temporary directory standing in for S3, on a free port of
127.0.0.1 with no login. It is stopped (the whole process group) whatever happens in the tests.
`browser` is Debian's /usr/bin/chromium driven by Playwright (its own browser download cannot
work on this machine). `--screenshots-dir DIR` (make screenshots) saves the README's pictures.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import local_airflow  # tests/conftest.py loaded it from scripts/
import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "windows-batch-compute-dag"
CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; the rest keeps Chromium from reaching for a network it cannot have.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Two task processes at once: each LocalExecutor worker is a forked process of several 100 MB.
PARALLELISM = 2
DAG_PARSE_TIMEOUT_S = 90.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots-dir",
        default=None,
        help="save the README screenshots (trigger-form.png, results.png) into this directory",
    )


@dataclass(frozen=True)
class AirflowUI:
    """A running local Airflow: its base URL and the directories it works in."""

    url: str
    home: Path
    local_root: Path

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the REST API (/api/v2/...); return (HTTP status, decoded JSON body)."""
        return local_airflow.request(self.url, method, path, body)

    def get(self, path: str) -> Any:
        status, body = self.api("GET", path)
        assert status == 200, f"GET {path}: HTTP {status}: {body}"
        return body

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the DAG, as the REST API lists them."""
        return list(self.get(f"dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"])

    def run_path(self, run_id: str) -> str:
        return f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def log_tail(self, lines: int = 40) -> str:
        return str(local_airflow.tail(self.home / "standalone.log", lines))


def _wait_for_dag(ui: AirflowUI) -> None:
    """Wait until the DAG processor has parsed the DAG; fail with its import error if any."""
    deadline = time.monotonic() + DAG_PARSE_TIMEOUT_S
    while time.monotonic() < deadline:
        status, _ = ui.api("GET", f"dags/{DAG_ID}")
        if status == 200:
            return
        errors = ui.get("importErrors").get("import_errors", [])
        if errors:
            details = "\n\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
            pytest.fail(f"the DAG folder has import errors:\n{details}")
        time.sleep(1)
    pytest.fail(
        f"{DAG_ID} did not appear in the local Airflow within {DAG_PARSE_TIMEOUT_S:.0f} s; "
        f"last lines of standalone.log:\n{ui.log_tail()}"
    )


@pytest.fixture(scope="session")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> Iterator[AirflowUI]:
    """`airflow standalone` with the local backend, stopped again whatever happens."""
    base = tmp_path_factory.mktemp("airflow-ui")
    home = base / "airflow"
    # The session's migrated database (tests/conftest.py): migrate() below then has nothing to do.
    home.mkdir(parents=True, exist_ok=True)
    for name in ("airflow.db", ".migrated"):
        shutil.copy2(migrated_db / name, home / name)
    local_root = base / "buckets"
    env = local_airflow.airflow_env(
        home=home,
        port=local_airflow.free_port(),
        local_root=local_root,
        parallelism=PARALLELISM,
    )
    local_airflow.migrate(env)
    with local_airflow.standalone(env) as url:
        ui = AirflowUI(url=url, home=home, local_root=local_root)
        _wait_for_dag(ui)
        # New DAGs may start paused (the default outside airflow_env): a paused DAG never runs.
        status, body = ui.api("PATCH", f"dags/{DAG_ID}", {"is_paused": False})
        assert status == 200, f"unpausing {DAG_ID}: HTTP {status}: {body}"
        yield ui


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright; closed at the end of the session."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package (make setup does it)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page per test (no state carried between tests)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots_dir(pytestconfig: pytest.Config) -> Path | None:
    """Where `make screenshots` saves the README pictures; None in ordinary test runs."""
    value = pytestconfig.getoption("screenshots_dir", default=None)
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        path = pytestconfig.invocation_params.dir / path
    path.mkdir(parents=True, exist_ok=True)
    return path


# A small study Octave finishes in seconds (4 tasks over 4 points), for tests that need results.
RESULTS_STUDY: dict[str, Any] = {
    "s3_bucket": "ui-test-results",
    "num_tasks": 4,
    "ebn0_db": [0, 2, 4, 6],
    "max_bits_per_task": 200_000,
}
RESULTS_RUN_TIMEOUT_S = 300.0
# Modules that read a finished run rather than make one: they run after the others, so they
# find the run test_trigger_form.py's small study finished and need no study of their own.
_READERS_OF_FINISHED_RUNS = ("test_results_view.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    readers = [i for i in items if i.path.name in _READERS_OF_FINISHED_RUNS]
    if readers:
        items[:] = [i for i in items if i not in readers] + readers


@dataclass(frozen=True)
class FinishedRun:
    """A successful run of the DAG and the local folder holding its results."""

    run_id: str
    results_dir: Path


def _results_dir(ui: AirflowUI, run_id: str) -> Path | None:
    """Where a run published its results (plan_tasks' record of its outputs), if it did."""
    status, entry = ui.api(
        "GET", f"{ui.run_path(run_id)}/taskInstances/plan_tasks/xcomEntries/results_location"
    )
    location = entry.get("value") if status == 200 and isinstance(entry, dict) else None
    while isinstance(location, str):
        location = json.loads(location)
    if not isinstance(location, dict) or not str(location.get("outputs", "")).startswith("s3://"):
        return None
    bucket, _, key = location["outputs"][len("s3://") :].partition("/")
    folder = ui.local_root / bucket / key
    return folder if (folder / "results.json").is_file() else None


@pytest.fixture(scope="session")
def finished_run(airflow_ui: AirflowUI) -> FinishedRun:
    """A successful run with results: one that already finished, or a small study run now."""
    for run in sorted(airflow_ui.runs(), key=lambda r: r.get("run_after") or "", reverse=True):
        if run["state"] == "success" and (folder := _results_dir(airflow_ui, run["dag_run_id"])):
            return FinishedRun(run_id=run["dag_run_id"], results_dir=folder)
    status, run = airflow_ui.api(
        "POST", f"dags/{DAG_ID}/dagRuns", {"conf": RESULTS_STUDY, "logical_date": None}
    )
    assert status == 200, f"triggering the small study: HTTP {status}: {run}"
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + RESULTS_RUN_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        state = airflow_ui.get(airflow_ui.run_path(run_id))["state"]
        if state in ("success", "failed"):
            break
        time.sleep(2)
    assert state == "success", f"run {run_id} ended {state!r}\n{airflow_ui.log_tail()}"
    folder = _results_dir(airflow_ui, run_id)
    assert folder is not None, f"run {run_id} succeeded but published no results.json"
    return FinishedRun(run_id=run_id, results_dir=folder)
