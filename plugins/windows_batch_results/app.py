"""The FastAPI app Airflow mounts at URL_PREFIX, and the run tab (external view) that embeds it.

    GET {URL_PREFIX}/results/{dag_id}/{run_id}                     the page (HTML)
    GET {URL_PREFIX}/results/{dag_id}/{run_id}/files/{path}        one output file
    GET {URL_PREFIX}/results/{dag_id}/{run_id}/files/items.csv     per work item detail

What it serves, to whom, from where:
- to whom: the Airflow UI's own users: the API server's `requires_access_dag` dependency reads
  the user from the UI's `_token` cookie (or a Bearer token) and asks the configured auth manager
  whether they may read this DAG's runs (401 without a login, 403 without the permission);
- what: only the runs of the engine's DAGs (tagged `windows-batch` by the DAG file), only run ids
  the metadata database knows, only files under the run's output folder, each as a download
  (images inline) with a sandboxing Content-Security-Policy;
- from where: the deployment's results bucket (S3_BUCKET) under the study's own prefix (the
  DAG's `results:<prefix>` tag), read with the API server's role through S3Hook, or the local
  folder in the local backend. The location plan_tasks recorded is believed only within those
  bounds (locate.py): rewriting it through XCom cannot point the view anywhere else.

Settings (the DAG's own, AIRFLOW__WINDOWS_BATCH__<KEY>): BACKEND (`local` reads LOCAL_ROOT,
anything else reads S3 through S3Hook with AWS_CONN_ID and REGION), S3_BUCKET.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, Response
from fastapi.responses import HTMLResponse

from windows_batch_results import locate, progress, render, runs
from windows_batch_results.store import LocalStore, ResultsStore, S3Store

log = logging.getLogger(__name__)

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
INLINE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
ATTACHMENT_TYPES = {
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
FILE_LIST_LIMIT = render.FILES_SHOWN
TABLE_FILE = "results.json"
TABLE_MAX_BYTES = 5 * 1024 * 1024
ITEMS_CSV = "items.csv"


def _local(env: Mapping[str, str]) -> bool:
    return env.get(_PREFIX + "BACKEND", "ecs").strip().lower() == "local"


def store_from_environment(environ: Mapping[str, str] | None = None) -> ResultsStore:
    """The store the DAG's settings describe: the local folder or S3 (see the module docstring)."""
    env = os.environ if environ is None else environ
    if _local(env):
        root = env.get(_PREFIX + "LOCAL_ROOT", "").strip() or str(_DEFAULT_LOCAL_ROOT)
        return LocalStore(root=Path(root))
    return S3Store(
        aws_conn_id=env.get(_PREFIX + "AWS_CONN_ID", "").strip() or "aws_default",
        region=env.get(_PREFIX + "REGION", "").strip() or None,
    )


def bucket_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The one bucket the view reads on AWS (None locally: the local root confines it)."""
    env = os.environ if environ is None else environ
    if _local(env):
        return None
    return env.get(_PREFIX + "S3_BUCKET", "").strip()


class _Refused(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def create_app(
    *,
    store: Callable[[], ResultsStore] = store_from_environment,
    bucket: Callable[[], str | None] = bucket_from_environment,
) -> FastAPI:
    """The Results app; `store` builds the results store, `bucket` names the allowed bucket."""
    app = FastAPI(title="windows-batch results", docs_url=None, redoc_url=None, openapi_url=None)
    access = [Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))]

    def located(dag_id: str, run_id: str) -> tuple[runs.RunRecord, locate.ResultsLocation | None]:
        study = runs.study_dag(dag_id)
        if study is None:
            raise _Refused(404, f"{dag_id} is not a study of this deployment.")
        record = runs.find_run(dag_id=dag_id, run_id=run_id)
        if record is None:
            raise _Refused(404, f"{dag_id} has no run {run_id!r}.")
        if record.location is None:
            return record, None
        allowed = bucket()
        if allowed == "":
            raise _Refused(404, "No results bucket is configured (setting S3_BUCKET).")
        try:
            where = locate.from_record(
                record.location, study_prefix=study.results_prefix, bucket=allowed
            )
        except locate.LocationError as exc:
            log.warning("Run %s of %s: %s", run_id, dag_id, exc)
            raise _Refused(
                404, "This run's results are not where its study's results may be."
            ) from None
        return record, where

    @app.get("/results/{dag_id}/{run_id}", dependencies=access, response_class=HTMLResponse)
    def results_page(dag_id: str, run_id: str) -> HTMLResponse:
        try:
            record, where = located(dag_id, run_id)
            if where is None:
                view: dict[str, Any] = _empty_view()
            else:
                view = _view(store(), where)
        except _Refused as exc:
            return _error(exc)
        page = render.page(
            dag_id=dag_id,
            run_id=run_id,
            state=record.state,
            running=record.running,
            **view,
        )
        return HTMLResponse(page, headers={**_HEADERS, "Content-Security-Policy": render.PAGE_CSP})

    @app.get("/results/{dag_id}/{run_id}/files/{name:path}", dependencies=access)
    def results_file(dag_id: str, run_id: str, name: str) -> Response:
        try:
            _, where = located(dag_id, run_id)
        except _Refused as exc:
            return _error(exc)
        if where is None:
            return _error(_Refused(404, "This run has no results yet."))
        results = store()
        try:
            if name == ITEMS_CSV:
                return _file(progress.items_csv(results, where.engine).encode(), ITEMS_CSV)
            data = results.read(where.outputs, name)
        except locate.LocationError as exc:
            log.warning("Run %s: %s", run_id, exc)
            return _error(_Refused(404, "Only the run's own output files are served."))
        if data is None:
            return _error(_Refused(404, f"This run has no file {name} (yet)."))
        return _file(data, name)

    return app


def _empty_view() -> dict[str, Any]:
    return {
        "progress": None,
        "document": None,
        "plot": None,
        "files": [],
        "file_count": 0,
        "file_bytes": 0,
    }


def _view(results: ResultsStore, where: locate.ResultsLocation) -> dict[str, Any]:
    """What the page shows of a planned run: progress, table, plot, files."""
    try:
        found = progress.count(results, where.engine)
        listing = results.list(where.outputs, limit=FILE_LIST_LIMIT)
        document = _table(results, where.outputs, listing.files)
    except locate.LocationError as exc:
        log.warning("%s: %s", where.outputs.uri, exc)
        raise _Refused(404, "This run's results are not where the view looks.") from None
    return {
        "progress": render.Progress(
            work_items=where.work_items,
            items_done=found.items_done,
            items_failed=found.items_failed,
            chunks=where.chunks,
            chunks_done=found.chunks_done,
            failed_chunks=found.failed_chunks,
        ),
        "document": document,
        "plot": _plot(listing.files),
        "files": listing.files,
        "file_count": listing.total,
        "file_bytes": listing.total_bytes,
    }


def _file(data: bytes, name: str) -> Response:
    """A file as data: images inline, everything else as a download; never a page."""
    extension = posixpath.splitext(name)[1].lower()
    filename = posixpath.basename(name).replace('"', "")
    headers = {**_HEADERS, "Content-Security-Policy": render.FILE_CSP}
    if extension in INLINE_TYPES:
        return Response(data, media_type=INLINE_TYPES[extension], headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    media = ATTACHMENT_TYPES.get(extension, "application/octet-stream")
    return Response(data, media_type=media, headers=headers)


def _table(
    results: ResultsStore, outputs: locate.S3Prefix, files: list[tuple[str, int]]
) -> dict[str, Any] | None:
    """The study's table: the shallowest results.json among its outputs, if it has `rows`."""
    candidates = sorted(
        (
            name
            for name, size in files
            if posixpath.basename(name) == TABLE_FILE and size <= TABLE_MAX_BYTES
        ),
        key=lambda n: (n.count("/"), n),
    )
    for name in candidates[:1]:
        data = results.read(outputs, name)
        try:
            document = json.loads(data or b"")
        except ValueError:
            return None
        if isinstance(document, dict) and isinstance(document.get("rows"), list):
            return document
    return None


def _plot(files: list[tuple[str, int]]) -> str | None:
    """The study's plot: results.png if it published one (shallowest first), else a PNG."""
    images = sorted(
        (name for name, _ in files if posixpath.splitext(name)[1].lower() in INLINE_TYPES),
        key=lambda n: (posixpath.basename(n) != "results.png", n.count("/"), n),
    )
    return images[0] if images else None


def _error(exc: _Refused) -> HTMLResponse:
    page = render.error_page(status_code=exc.status_code, message=exc.message)
    return HTMLResponse(
        page,
        status_code=exc.status_code,
        headers={**_HEADERS, "Content-Security-Policy": render.FILE_CSP},
    )
