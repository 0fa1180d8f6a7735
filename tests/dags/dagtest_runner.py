"""Run one study's DAG once with `dag.test()` and print the outcome as JSON.

Run in a child process whose environment (AIRFLOW_HOME, backend settings, AWS connection) the
test prepares, so each test gets a fresh Airflow configuration:

    python tests/dags/dagtest_runner.py '{"num_tasks": 6}' [LOGICAL_DATE]

WB_DAG_ID picks the DAG (default windows-batch-compute-dag, the BER study).

LOGICAL_DATE (ISO 8601, optional) fixes the run id: manual__<LOGICAL_DATE>.

The last stdout line is JSON: {"state": ..., "run_id": ..., "tasks": {"task_id[map_index]": state},
"tries": {...}, "xcom": {...}}; or {"error": ...} (exit 0) when the run's params are refused
before the run exists. Anything else that goes wrong (an import error, a crash in dag.test) exits
nonzero with its traceback on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "dags"))
# Airflow puts its plugins folder on sys.path; the DAG imports its trigger from there.
sys.path.insert(0, str(REPO / "plugins"))


def serve_only_the_newest_api_versions() -> None:
    """dag.test() serves the Task SDK's calls from an in-process Execution API, and Cadwyn
    builds that app's routers for every API version Airflow still accepts (ten in 3.3.1): about
    5 of the 7 s that app costs in every dag.test() process, the most expensive step of a tiny
    run. The installed Task SDK speaks only the newest version (its airflow-api-version header is
    API_VERSION), so the runner keeps that version and the one below it (Cadwyn insists that a
    route kept only for older versions is restored in one of them), and drops the older
    versions' migrations. The routes, models and database our DAG uses are unchanged. With
    another Airflow (a different newest version) it changes nothing."""
    from airflow.api_fastapi.execution_api import versions
    from airflow.sdk.api.datamodels._generated import API_VERSION
    from cadwyn import HeadVersion, Version, VersionBundle

    full = versions.bundle
    if len(full.versions) < 4 or full.versions[0].value != API_VERSION:
        return
    kept = full.versions[:2]
    changes = [change for version in kept for change in version.changes]
    for change in changes:
        change._bound_version_bundle = None
    try:
        versions.bundle = VersionBundle(HeadVersion(), *kept, Version(full.versions[2].value))
    except Exception:  # a Cadwyn that checks more: serve every version, as Airflow does
        for change in changes:
            change._bound_version_bundle = full
        versions.bundle = full


def main() -> int:
    conf = json.loads(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else {}
    logical_date = sys.argv[2] if len(sys.argv) > 2 else None
    import os

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    serve_only_the_newest_api_versions()
    bag = DagBag(dag_folder=str(REPO / "dags" / "studies_dags.py"))
    if bag.import_errors:
        raise SystemExit(f"the DAG did not import: {bag.import_errors}")
    dag = bag.dags[os.environ.get("WB_DAG_ID", "windows-batch-compute-dag")]
    try:
        if logical_date:
            from datetime import datetime

            when = datetime.fromisoformat(logical_date)
            dr = dag.test(run_conf=conf, logical_date=when, run_after=when)
        else:
            dr = dag.test(run_conf=conf)
    except ParamValidationError as exc:  # params refused before the run exists
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 0
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id
            )
        ).all()
        tasks = {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
            for ti in tis
        }
        tries = {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.try_number
            for ti in tis
        }
        xcoms = session.execute(
            select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
                XComModel.dag_id == dag.dag_id, XComModel.run_id == dr.run_id
            )
        ).all()
        xcom = {
            f"{task_id}[{map_index}].{key}" if map_index >= 0 else f"{task_id}.{key}": value
            for task_id, map_index, key, value in xcoms
            if map_index < 0
        }
    print(
        json.dumps(
            {
                "state": str(dr.state),
                "run_id": dr.run_id,
                "tasks": tasks,
                "tries": tries,
                "xcom": xcom,
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
