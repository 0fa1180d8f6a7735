"""A local Airflow for this repository: environment, metadata database, `airflow standalone`.

Used by `make run`/`make ui` (scripts/run_local.py) and by the tests that need real Airflow.
Everything lives under the repository (`.local/`): the Airflow home with its SQLite metadata
database and logs, and the directory that stands in for S3 in the local backend.

    env = airflow_env(port=8080)
    migrate(env)
    with standalone(env) as url:
        status, dag = request(url, "GET", "dags/windows-batch-compute-dag")
    # http://127.0.0.1:8080, stopped (whole process group) when the block exits
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_HOME = REPO / ".local" / "airflow"
DEFAULT_LOCAL_ROOT = REPO / ".local" / "buckets"
# Four tasks per core: most of a local task is starting processes (Airflow's task process,
# Python, Octave), so overlapping them keeps the cores busy; compare settings with
# `python benchmarks/bench_local_run.py --parallelism N`. Each slot costs memory; 16 is
# Airflow's per-DAG default anyway.
DEFAULT_PARALLELISM = min(16, 4 * (os.cpu_count() or 2))
_SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


def airflow_env(
    *,
    home: Path | None = None,
    port: int = 8080,
    local_root: Path | None = None,
    parallelism: int | None = None,
) -> dict[str, str]:
    """The full environment for a local Airflow with the DAG's local backend.

    :param home: AIRFLOW_HOME (config, SQLite metadata database, logs); default `.local/airflow`.
    :param port: TCP port of the API server / UI on 127.0.0.1.
    :param local_root: directory that stands in for S3 (one sub-directory per bucket).
    :param parallelism: task processes the LocalExecutor runs at once; default
        DEFAULT_PARALLELISM.
    """
    home = (home or DEFAULT_HOME).resolve()
    local_root = (local_root or DEFAULT_LOCAL_ROOT).resolve()
    home.mkdir(parents=True, exist_ok=True)
    local_root.mkdir(parents=True, exist_ok=True)
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    # Settings a developer's shell may carry for another Airflow must not leak into this one.
    for key in [k for k in env if k.startswith("AIRFLOW__") or k == "AIRFLOW_CONFIG"]:
        del env[key]
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            # The Results view (a FastAPI app and a run tab), as plugins.zip carries it to MWAA.
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism or DEFAULT_PARALLELISM),
            "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
            # No login: the UI and the REST API act as admin (local use on 127.0.0.1 only).
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # As on MWAA (mwaa.yaml MaxMapLength): the engine refuses plans by this number.
            "AIRFLOW__CORE__MAX_MAP_LENGTH": "1024",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            # Task processes reach the execution API through this URL.
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # The DAG's local backend: bersim runs as subprocesses, S3 is a directory.
            "AIRFLOW__WINDOWS_BATCH__BACKEND": "local",
            "AIRFLOW__WINDOWS_BATCH__LOCAL_ROOT": str(local_root),
            "OCTAVE_EXECUTABLE": "octave-cli",
            "OCTAVE_HISTFILE": "/dev/null",
            "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", "/usr/bin:/bin")]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _airflow() -> str:
    candidate = VENV_BIN / "airflow"
    if candidate.exists():
        return str(candidate)
    return str(Path(sys.executable).parent / "airflow")


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata database (`airflow db migrate`; quick when up to date)."""
    home = Path(env["AIRFLOW_HOME"])
    stamp = home / ".migrated"
    db = home / "airflow.db"
    version = _airflow_version()
    if db.exists() and stamp.exists() and stamp.read_text() == version:
        return
    result = subprocess.run(
        [_airflow(), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise RuntimeError(f"airflow db migrate failed (exit {result.returncode}):\n{tail}")
    stamp.write_text(version)


def _airflow_version() -> str:
    return importlib.metadata.version("apache-airflow")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the API server does: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(base_url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=2) as resp:  # noqa: S310
            return dict(json.load(resp))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _ready(health: dict[str, object] | None) -> bool:
    if not health:
        return False
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        part = health.get(component)
        if not isinstance(part, dict) or part.get("status") != "healthy":
            return False
    return True


def _stop_group(proc: subprocess.Popen[bytes], *, grace_s: float = 20.0) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    # The group may outlive its leader (scheduler, task processes): wait for all of it.
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextmanager
def standalone(env: dict[str, str], *, timeout_s: float = 120) -> Iterator[str]:
    """Run `airflow standalone` until the block exits; yield its base URL once it is ready.

    Ready means the API answers and the scheduler, triggerer and DAG processor report healthy.
    Output goes to `<AIRFLOW_HOME>/standalone.log`. The process runs in its own process group,
    which is always stopped on exit (SIGTERM, then SIGKILL), whatever happened in the block.
    """
    port = int(env["AIRFLOW__API__PORT"])
    base_url = env["AIRFLOW__API__BASE_URL"]
    if not _port_free(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is already in use; choose another port")
    log_path = Path(env["AIRFLOW_HOME"]) / "standalone.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [_airflow(), "standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(_health(base_url)):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow standalone exited with {proc.returncode} before it was ready; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"airflow standalone not ready after {timeout_s:.0f} s "
                    f"(health: {_health(base_url)}); last lines of {log_path}:\n{tail(log_path)}"
                )
            time.sleep(0.5)
        yield base_url
    finally:
        _stop_group(proc)


def request(base_url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call the local Airflow's REST API (/api/v2/<path>; no login: every caller is admin).

    Returns the HTTP status and the decoded JSON body (the raw text if it is not JSON).
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        f"{base_url}/api/v2/{path.lstrip('/')}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode(errors="replace")


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file ("" if it cannot be read)."""
    with suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
