"""The run's results one click away: the Results view, an extra link, and a run note.

- Results view: plugins/windows_batch_results adds a "Results" tab to every run's page in the
  Airflow UI (plot, table, missing tasks, downloads), served by the API server from where the
  run wrote its results. `results_view_path` is that tab's address.
- Extra link: the aggregate task carries the operator link "Results". Airflow computes it when
  the task finishes (success or failure) and stores it in XCom; the UI shows it on the task
  instance. On AWS it is the S3 console URL of the study's plot (or its outputs folder); in the
  local backend the file's `file://` URL (which browsers do not open from a web page: the view
  is the way there).
- Run note: a task cannot set its run's note through the Task SDK, so the engine sets it
  through the REST API's bulk endpoint `PATCH /api/v2/dags/{dag_id}/dagRuns`: the local
  Airflow's own API (`RUN_NOTE=api`, what `make ui`/`make run` use: no login there) or, on MWAA,
  the provider's `MwaaHook.invoke_rest_api` (`RUN_NOTE=mwaa` with `MWAA_ENVIRONMENT`; the
  execution role needs `airflow:InvokeRestApi`). The note's link opens the Results view. Any
  failure to set the note is logged and ignored: the results and the links do not depend on it.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from windows_batch.objects import local_path, split

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

    from windows_batch.settings import Settings

log = logging.getLogger(__name__)

RESULTS_PNG = "results.png"
RESULTS_JSON = "results.json"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key)."""
    return split(uri)


def s3_console_url(uri: str, region: str | None) -> str:
    """The S3 console page of the object `s3://bucket/key` (key URL-encoded: run ids hold ':+')."""
    bucket, key = split_s3_uri(uri)
    query = {"region": region, "prefix": key} if region else {"prefix": key}
    return (
        f"https://s3.console.aws.amazon.com/s3/object/{bucket}?"
        f"{urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe='/')}"
    )


def results_link(uri: str, *, backend: str, local_root: Path, region: str | None) -> str:
    """How a person opens `uri`: the S3 console on AWS, a file:// URL locally."""
    if backend == "local":
        return local_path(uri, local_root).resolve().as_uri()
    return s3_console_url(uri, region)


RESULTS_VIEW_ROUTE = "results"
"""The Results tab's `url_route` (plugins/windows_batch_results/app.py, VIEW)."""


def results_view_path(*, dag_id: str, run_id: str) -> str:
    """The run's Results tab, relative to the Airflow UI's base URL (no leading slash).

    Relative, so a link in the run note works wherever the UI is served (it resolves against the
    UI's <base href>); `make run` prefixes it with the local base URL.
    """
    dag, run = (urllib.parse.quote(v, safe="") for v in (dag_id, run_id))
    return f"dags/{dag}/runs/{run}/plugin/{RESULTS_VIEW_ROUTE}"


def note_text(*, link: str, location: str, summary: str | None, partial: bool, label: str) -> str:
    """The run's results in its note (Markdown): the link to the Results view, where the
    outputs are, the study's summary."""
    head = "Results (partial: some tasks failed)" if partial else "Results"
    lines = [f"**{head}:** [{label}]({link})", "", f"`{location}`"]
    if summary:
        lines += ["", summary]
    return "\n".join(lines)


MAX_NOTE_CHARS = 1000
"""Airflow's limit for a run note set through the bulk endpoint."""


def note_request(*, dag_id: str, run_id: str, note: str) -> tuple[str, dict[str, Any]]:
    """Path (under /api/v2) and body that set a run's note.

    The bulk endpoint `PATCH /dags/{dag_id}/dagRuns` carries the run id in the body, so the
    path stays short: mwaa:InvokeRestApi accepts paths of at most 64 characters, and a run id
    alone can take 40 (`manual__2026-01-02T03:04:05.678901+00:00`).
    """
    path = f"/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"
    body = {
        "actions": [
            {
                "action": "update",
                "entities": [{"dag_run_id": run_id, "note": note[:MAX_NOTE_CHARS]}],
                "update_mask": ["note"],
            }
        ]
    }
    return path, body


def _bulk_succeeded(answer: Any, dag_id: str, run_id: str) -> bool:
    update = (answer or {}).get("update") or {}
    if update.get("errors"):
        log.warning("Could not set the run note: %s", update["errors"])
    return f"{dag_id}.{run_id}" in (update.get("success") or [])


def set_run_note(settings: Settings, *, dag_id: str, run_id: str, note: str) -> bool:
    """Set the run's note through the REST API (see the module docstring); True if it was set."""
    path, body = note_request(dag_id=dag_id, run_id=run_id, note=note)
    try:
        if settings.run_note == "api":
            base_url = os.environ.get("AIRFLOW__API__BASE_URL", "").rstrip("/")
            if not base_url:
                log.info("No API server configured (AIRFLOW__API__BASE_URL): run note not set")
                return False
            request = urllib.request.Request(  # noqa: S310 (our own Airflow's URL)
                f"{base_url}/api/v2{path}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method="PATCH",
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return _bulk_succeeded(json.load(response), dag_id, run_id)
        if settings.run_note == "mwaa":
            if not settings.mwaa_environment:
                log.warning("RUN_NOTE=mwaa needs MWAA_ENVIRONMENT: run note not set")
                return False
            from airflow.providers.amazon.aws.hooks.mwaa import MwaaHook  # noqa: PLC0415

            # The hook falls back to a web login token when the role lacks InvokeRestApi; it
            # needs the Airflow major version for that (Airflow 3: /api/v2, a JWT).
            answer = MwaaHook(
                aws_conn_id=settings.aws_conn_id, region_name=settings.region
            ).invoke_rest_api(
                env_name=settings.mwaa_environment,
                path=path,
                method="PATCH",
                body=body,
                airflow_version=3,
            )
            status = int(answer.get("RestApiStatusCode", 0))
            return 200 <= status < 300 and _bulk_succeeded(
                answer.get("RestApiResponse"), dag_id, run_id
            )
    except Exception as exc:  # URLError, botocore errors...: the note is a convenience, never fatal
        log.warning("Could not set the run note: %s", exc)
    return False


class ResultsLink(BaseOperatorLink):
    """Operator link from the aggregate task to the run's published results."""

    name = "Results"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return str(getattr(operator, "results_url", "") or "")
