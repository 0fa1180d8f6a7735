"""The FastAPI app Airflow mounts at URL_PREFIX, and the run tab (external view) that embeds it.

    GET {URL_PREFIX}/results/{dag_id}/{run_id}                the page (HTML)
    GET {URL_PREFIX}/results/{dag_id}/{run_id}/files/{name}   results.png, results.csv, results.json

Access is the Airflow UI's own: the API server's `requires_access_dag` dependency reads the
user from the UI's `_token` cookie (or a Bearer token) and asks the configured auth manager
whether they may read this DAG's runs (401 without a login, 403 without the permission). Only
the DAG `dag_id` given to create_app is served, only for a run id the metadata database knows,
and only the published files directly under the run's output prefix.

Settings (the DAG's own, AIRFLOW__WINDOWS_BATCH__<KEY>): BACKEND (`local` reads LOCAL_ROOT,
anything else reads S3 through S3Hook with AWS_CONN_ID and REGION).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, Response
from fastapi.responses import HTMLResponse

from windows_batch_results import locate, render, runs
from windows_batch_results.store import LocalStore, ResultsStore, S3Store

log = logging.getLogger(__name__)

DAG_ID = "windows-batch-compute-dag"
URL_PREFIX = "/windows-batch"
VIEW_ROUTE = "results"
# No leading slash: the UI resolves it against its <base href>, so it also works under a path.
VIEW = {
    "name": "Results",
    "href": f"{URL_PREFIX.lstrip('/')}/results/{{DAG_ID}}/{{RUN_ID}}",
    "destination": "dag_run",
    "url_route": VIEW_ROUTE,
}
_PREFIX = "AIRFLOW__WINDOWS_BATCH__"
_DEFAULT_LOCAL_ROOT = Path(__file__).resolve().parents[2] / ".local" / "buckets"
_MEDIA_TYPES = {
    "results.png": "image/png",
    "results.csv": "text/csv; charset=utf-8",
    "results.json": "application/json",
}
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def store_from_environment(environ: Mapping[str, str] | None = None) -> ResultsStore:
    """The store the DAG's settings describe: the local folder or S3 (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(_PREFIX + "BACKEND", "ecs").strip().lower() == "local":
        root = env.get(_PREFIX + "LOCAL_ROOT", "").strip() or str(_DEFAULT_LOCAL_ROOT)
        return LocalStore(root=Path(root))
    return S3Store(
        aws_conn_id=env.get(_PREFIX + "AWS_CONN_ID", "").strip() or "aws_default",
        region=env.get(_PREFIX + "REGION", "").strip() or None,
    )


class _Refused(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def create_app(
    *,
    dag_id: str = DAG_ID,
    store: Callable[[], ResultsStore] = store_from_environment,
) -> FastAPI:
    """The Results app for `dag_id`; `store` builds the results store on each request."""
    app = FastAPI(title="windows-batch results", docs_url=None, redoc_url=None, openapi_url=None)
    access = [Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))]

    def located(request_dag_id: str, run_id: str) -> tuple[runs.RunRecord, Any]:
        if request_dag_id != dag_id:
            raise _Refused(404, f"This view serves the DAG {dag_id} only.")
        record = runs.find_run(dag_id=dag_id, run_id=run_id)
        if record is None:
            raise _Refused(404, f"{dag_id} has no run {run_id!r}.")
        if record.aggregate_command is None:
            return record, None
        try:
            return record, locate.from_aggregate_command(record.aggregate_command)
        except locate.LocationError as exc:
            log.warning("Run %s: %s", run_id, exc)
            raise _Refused(404, "This run's results location is not one the view serves.") from None

    @app.get("/results/{dag_id}/{run_id}", dependencies=access, response_class=HTMLResponse)
    def results_page(dag_id: str, run_id: str) -> HTMLResponse:
        try:
            record, where = located(dag_id, run_id)
        except _Refused as exc:
            return _error(exc)
        results = store()
        document = None
        task_results = None
        files: list[str] = []
        if where is not None:
            try:
                raw = results.read(where.output, "results.json")
                if raw is not None:
                    document = json.loads(raw)
                    # bersim writes results.json last: when it exists, the other files do too.
                    files = list(locate.PUBLISHED_FILES)
                else:
                    task_results = results.count_json(where.input)
            except locate.LocationError as exc:
                log.warning("Run %s: %s", run_id, exc)
                return _error(_Refused(404, "This run's results are not where the view looks."))
        page = render.page(
            dag_id=dag_id,
            run_id=run_id,
            state=record.state,
            running=record.running,
            document=document,
            task_results=task_results,
            expected_tasks=where.expected_tasks if where is not None else None,
            files=files,
        )
        return HTMLResponse(page, headers=_HEADERS)

    @app.get("/results/{dag_id}/{run_id}/files/{name}", dependencies=access)
    def results_file(dag_id: str, run_id: str, name: str) -> Response:
        if name not in locate.PUBLISHED_FILES:
            return _error(_Refused(404, f"Only {', '.join(locate.PUBLISHED_FILES)} are served."))
        try:
            _, where = located(dag_id, run_id)
        except _Refused as exc:
            return _error(exc)
        try:
            data = store().read(where.output, name) if where is not None else None
        except locate.LocationError as exc:
            log.warning("Run %s: %s", run_id, exc)
            data = None
        if data is None:
            return _error(_Refused(404, f"This run has no {name} (yet)."))
        return Response(data, media_type=_MEDIA_TYPES[name], headers=_HEADERS)

    return app


def _error(exc: _Refused) -> HTMLResponse:
    page = render.error_page(status_code=exc.status_code, message=exc.message)
    return HTMLResponse(page, status_code=exc.status_code, headers=_HEADERS)
