"""Parse the DAG file with network access disabled and print what the integrity tests check.

Airflow itself is imported first (its import is not the DAGs' business); then every socket and
every botocore API call raises, and the DAG file (dags/studies_dags.py, one DAG per study) is
parsed with a DagBag. Prints one JSON line: import errors, blocked network attempts, parse time,
and each DAG's shape by DAG id.

    python tests/dags/parse_check.py
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "studies_dags.py"
sys.path.insert(0, str(REPO / "dags"))
# Airflow puts its plugins folder on sys.path; the DAG imports its trigger from there.
sys.path.insert(0, str(REPO / "plugins"))

import airflow.sdk  # noqa: E402, F401  (Airflow's own import, before the network goes away)
import botocore.client  # noqa: E402
from airflow.dag_processing.dagbag import DagBag  # noqa: E402

attempts: list[str] = []


class _NoSocket(socket.socket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        attempts.append(f"socket{args}")
        raise OSError("network disabled while parsing the DAG")


def _no_api_call(self: Any, operation: str, params: Any) -> Any:
    attempts.append(f"aws:{operation}")
    raise RuntimeError(f"AWS call {operation} while parsing the DAG")


def _no_connection(*args: Any, **kwargs: Any) -> Any:
    attempts.append(f"create_connection{args[:1]}")
    raise OSError("network disabled while parsing the DAG")


socket.socket = _NoSocket  # type: ignore[misc]
socket.create_connection = _no_connection
botocore.client.BaseClient._make_api_call = _no_api_call  # type: ignore[method-assign]


def task_info(task: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "type": type(task).__name__,
        "trigger_rule": getattr(task.trigger_rule, "value", str(task.trigger_rule)),
        "retries": task.retries,
        "is_setup": task.is_setup,
        "is_teardown": task.is_teardown,
        "on_failure_fail_dagrun": getattr(task, "on_failure_fail_dagrun", None),
        "upstream": sorted(task.upstream_task_ids),
        "mode": getattr(task, "mode", None),
        "poke_interval": getattr(task, "poke_interval", None),
    }
    if type(task).__name__ == "MappedOperator":
        info["operator_class"] = task.operator_class.__name__
        info["max_active_tis_per_dagrun"] = task.max_active_tis_per_dagrun
        info["partial_kwargs"] = {
            k: v
            for k, v in task.partial_kwargs.items()
            if isinstance(v, (str, int, float, bool, type(None), dict, list))
        }
        info["execution_timeout_s"] = (
            task.partial_kwargs["execution_timeout"].total_seconds()
            if task.partial_kwargs.get("execution_timeout")
            else None
        )
    else:
        info["execution_timeout_s"] = (
            task.execution_timeout.total_seconds() if task.execution_timeout else None
        )
        info["extra_links"] = [link.name for link in task.operator_extra_links]
    return info


def main() -> int:
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(DAG_FILE))
    parse_s = time.perf_counter() - started
    out: dict[str, Any] = {
        "import_errors": {str(k): v for k, v in bag.import_errors.items()},
        "network_attempts": attempts,
        "parse_s": parse_s,
        "dags": {
            dag.dag_id: {
                "dag_id": dag.dag_id,
                "display_name": dag.dag_display_name,
                "description": dag.description,
                "tags": sorted(dag.tags),
                "catchup": dag.catchup,
                "schedule": str(dag.schedule),
                "max_active_runs": dag.max_active_runs,
                "doc_md": dag.doc_md,
                "default_retries": dag.default_args.get("retries"),
                "params": list(dag.params.keys()),
                "tasks": {t.task_id: task_info(t) for t in dag.tasks},
            }
            for dag in bag.dags.values()
        },
    }
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
