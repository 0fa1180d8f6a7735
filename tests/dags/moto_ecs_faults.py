"""tests/dags/moto_ecs_server.py with the faults the deadline tests need, switched on by env.

- MOTO_HANG_TASK_INDEXES (comma-separated): the container of `simulate ... --task-index I` for
  such an I never exits by itself (it sleeps); only StopTask ends it (SIGTERM, exit 143).
- MOTO_LOGS_FAIL=throttle | missing: every GetLogEvents call answers ThrottlingException (as
  CloudWatch Logs does over its rate) or ResourceNotFoundException (a stream that is gone); the
  containers still write their lines.

    python tests/dags/moto_ecs_faults.py PORT      # prints "READY <port>" when serving
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("moto_ecs_server", HERE / "moto_ecs_server.py")
assert _spec is not None
assert _spec.loader is not None
server = importlib.util.module_from_spec(_spec)
sys.modules["moto_ecs_server"] = server
_spec.loader.exec_module(server)

from moto.core.exceptions import JsonRESTError  # noqa: E402
from moto.logs.responses import LogsResponse  # noqa: E402

HANG = {int(x) for x in os.environ.get("MOTO_HANG_TASK_INDEXES", "").split(",") if x.strip()}
LOGS_FAIL = os.environ.get("MOTO_LOGS_FAIL", "")


def _hang_entrypoint() -> Path:
    script = Path(tempfile.mkdtemp(prefix="moto-hang-")) / "hang.sh"
    script.write_text('#!/bin/bash\necho "bersim (hung): $*"\nexec sleep 86400\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


_HANG_ENTRYPOINT = _hang_entrypoint()
_original_container_init = server.Container.__init__


def _task_index(task: Any) -> int | None:
    for override in (task.overrides or {}).get("containerOverrides", []):
        command = [str(a) for a in override.get("command") or []]
        if command[:1] == ["simulate"] and "--task-index" in command:
            return int(command[command.index("--task-index") + 1])
    return None


def container_init(self: Any, backend: Any, task: Any) -> None:
    """Start the container; a hung index gets a process that only StopTask ends."""
    if _task_index(task) not in HANG:
        _original_container_init(self, backend, task)
        return
    entrypoint = server.ENTRYPOINT
    server.ENTRYPOINT = _HANG_ENTRYPOINT  # run_task holds the server's lock meanwhile
    try:
        _original_container_init(self, backend, task)
    finally:
        server.ENTRYPOINT = entrypoint


_original_get_log_events = LogsResponse.get_log_events


def get_log_events(self: LogsResponse) -> str:
    if LOGS_FAIL == "throttle":
        raise JsonRESTError("ThrottlingException", "Rate exceeded")
    if LOGS_FAIL == "missing":
        raise JsonRESTError("ResourceNotFoundException", "The specified log stream does not exist.")
    return _original_get_log_events(self)


server.Container.__init__ = container_init  # type: ignore[method-assign]
LogsResponse.get_log_events = get_log_events  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(server.main())
