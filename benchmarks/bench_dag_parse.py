"""Parse time of dags/studies_dags.py (one DAG per shipped study), and the network calls it
makes (0).

Each backend is measured in a fresh child process: Airflow's own import comes first and is not
counted; then sockets and botocore API calls are made to raise (and counted), and the file is
parsed with a DagBag, as the DAG processor does:
- cold: the first parse, paying for every module the file imports (windows_batch, openjd-model
  and, for the ECS backend, the Amazon provider's ECS operator, botocore included) and for
  validating each job template with openjd-model (no cache yet);
- cached: the same, once a parse has validated the templates: openjd-model's verdict on a
  template is kept on disk per content (AIRFLOW__WINDOWS_BATCH__CACHE_DIR), so a parser
  process only re-reads it, and Python's compiled modules exist (the cold parse wrote them;
  PYTHONDONTWRITEBYTECODE is ignored here, as a deployment does not set it);
- processor: as the DAG processor parses: its manager has frozen its heap (gc.freeze()) and
  runs Airflow's own `_pre_import_airflow_modules(file)` before it forks each parser
  ([dag_processor] parsing_pre_import_modules): the `airflow.*` modules the file imports are
  then already loaded, and a collection does not walk Airflow's objects;
- warm: median of 20 more parses in the same process (the file re-executed, imports cached).
Goal: under 100 ms, zero network calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, socket, statistics, sys, time
sys.path.insert(0, sys.argv[1] + "/dags")
sys.path.insert(0, sys.argv[1] + "/plugins")
t0 = time.perf_counter()
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
airflow_s = time.perf_counter() - t0
import botocore.client
attempts = []
class NoSocket(socket.socket):
    def __init__(self, *a, **k):
        attempts.append("socket")
        raise OSError("no network while parsing")
def no_call(self, operation, params):
    attempts.append(operation)
    raise RuntimeError("no AWS call while parsing")
socket.socket = NoSocket
botocore.client.BaseClient._make_api_call = no_call
path = sys.argv[1] + "/dags/studies_dags.py"
if sys.argv[3] == "processor":
    # The DAG processor's manager freezes its heap (gc.freeze(), DagFileProcessorManager.before_run)
    # before it pre-imports and forks a parser: a parse's garbage collections then skip
    # Airflow's millions of objects.
    import gc
    gc.freeze()
    import structlog
    from airflow.dag_processing.processor import _pre_import_airflow_modules
    _pre_import_airflow_modules(path, structlog.get_logger())
t = time.perf_counter(); bag = DagBag(dag_folder=path); first = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
warm = []
for _ in range(20):
    t = time.perf_counter(); DagBag(dag_folder=path); warm.append(time.perf_counter() - t)
print(json.dumps({"airflow_s": airflow_s, "first_s": first, "warm_s": statistics.median(warm),
                  "attempts": attempts, "dags": list(bag.dags)}))
"""


def measure(backend: str, mode: str, cache_dir: str) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW__WINDOWS_BATCH__") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        {
            # Compiled modules kept, as a deployment keeps them (the first parse writes them).
            "PYTHONPYCACHEPREFIX": str(Path(cache_dir) / "pycache"),
            "AIRFLOW_HOME": tempfile.mkdtemp(prefix="bench-parse-"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__WINDOWS_BATCH__BACKEND": backend,
            "AIRFLOW__WINDOWS_BATCH__CACHE_DIR": cache_dir,
        }
    )
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), backend, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    return dict(json.loads(line))


def main() -> None:
    head = ("backend", "mode", "Airflow import", "first parse", "warm parse", "network")
    print(f"{head[0]:8} {head[1]:10} {head[2]:>14} {head[3]:>12} {head[4]:>11} {head[5]}")
    dags: list[str] = []
    for backend in ("ecs", "local"):
        # A fresh cache per backend: "cold" validates every template, the others find it done.
        cache_dir = tempfile.mkdtemp(prefix="bench-parse-cache-")
        for mode in ("cold", "cached", "processor"):
            r = measure(backend, "cold" if mode == "cached" else mode, cache_dir)
            dags = r["dags"]
            print(
                f"{backend:8} {mode:10} {r['airflow_s'] * 1000:11.0f} ms "
                f"{r['first_s'] * 1000:9.1f} ms {r['warm_s'] * 1000:8.1f} ms "
                f"{len(r['attempts'])} calls"
            )
    print(f"DAGs parsed: {len(dags)} ({', '.join(sorted(dags))})")
    print(
        'goal: < 100 ms per parse, 0 network calls. The DAG processor pays the "processor" '
        'first parse on every re-parse (templates cached); "cold" is paid once per fresh '
        "process with no cache (a new worker); warm is a re-parse in the same process."
    )


if __name__ == "__main__":
    main()
