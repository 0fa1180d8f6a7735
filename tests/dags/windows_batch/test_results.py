"""results.py: where the results link points, and the run note.

(A study's one-line summary is the study's own: tests/dags/studies/bersim/test_study.py.)
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from windows_batch import results
from windows_batch import settings as settings_mod

RUN_ID = "manual__2026-01-02T03:04:05.678901+00:00"
PNG = f"s3://my-results/sim/aggregate_results/{RUN_ID}/results.png"


def test_s3_console_url_encodes_the_run_id() -> None:
    url = results.s3_console_url(PNG, "eu-west-1")
    assert url.startswith("https://s3.console.aws.amazon.com/s3/object/my-results?")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["region"] == ["eu-west-1"]
    assert query["prefix"] == [f"sim/aggregate_results/{RUN_ID}/results.png"]
    assert "+" not in urllib.parse.urlsplit(url).query  # '+' would read back as a space


def test_local_link_is_the_file(tmp_path: Path) -> None:
    link = results.results_link(PNG, backend="local", local_root=tmp_path, region=None)
    expected = tmp_path / "my-results" / "sim" / "aggregate_results" / RUN_ID / "results.png"
    assert link == expected.resolve().as_uri()


class _NoteHandler(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, dict[str, Any]]]] = []

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.command, self.path, body))
        entities = body["actions"][0]["entities"]
        done = [f"windows-batch-compute-dag.{e['dag_run_id']}" for e in entities]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"update": {"success": done, "errors": []}}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def note_server() -> Any:
    server = HTTPServer(("127.0.0.1", 0), _NoteHandler)
    _NoteHandler.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _NoteHandler.received
    finally:
        server.shutdown()
        server.server_close()


def test_run_note_goes_to_the_rest_api(note_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base_url, received = note_server
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", base_url)
    settings = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__BACKEND": "local"})
    assert settings.run_note == "api"
    ok = results.set_run_note(
        settings, dag_id="windows-batch-compute-dag", run_id=RUN_ID, note="hi"
    )
    assert ok
    method, path, body = received[0]
    assert method == "PATCH"
    assert path == "/api/v2/dags/windows-batch-compute-dag/dagRuns"
    assert body == {
        "actions": [
            {
                "action": "update",
                "entities": [{"dag_run_id": RUN_ID, "note": "hi"}],
                "update_mask": ["note"],
            }
        ]
    }


def test_note_path_fits_invoke_rest_api() -> None:
    """mwaa:InvokeRestApi takes paths of at most 64 characters: the run id goes in the body."""
    path, body = results.note_request(dag_id="windows-batch-compute-dag", run_id=RUN_ID, note="x")
    assert len(path) <= 64
    assert body["actions"][0]["entities"][0]["dag_run_id"] == RUN_ID


def test_run_note_failure_is_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:9")  # discard port: refused
    settings = settings_mod.load({"AIRFLOW__WINDOWS_BATCH__BACKEND": "local"})
    assert not results.set_run_note(settings, dag_id="d", run_id=RUN_ID, note="x")


def test_note_text_links_the_results_and_carries_the_summary() -> None:
    note = results.note_text(
        link="https://x/y", location=PNG, summary="3 points", partial=True, label="results.png"
    )
    assert (
        note.splitlines()[0]
        == "**Results (partial: some tasks failed):** [results.png](https://x/y)"
    )
    assert PNG in note
    assert note.endswith("3 points")
    whole = results.note_text(
        link="https://x/y", location="s3://b/out/", summary=None, partial=False, label="outputs"
    )
    assert whole == "**Results:** [outputs](https://x/y)\n\n`s3://b/out/`"


def test_mwaa_note_goes_through_invoke_rest_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MWAA transport is MwaaHook.invoke_rest_api; Stubber checks the exact request."""
    import boto3
    from airflow.providers.amazon.aws.hooks.mwaa import MwaaHook
    from botocore.stub import Stubber

    client = boto3.client(
        "mwaa", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    path, body = results.note_request(dag_id="windows-batch-compute-dag", run_id=RUN_ID, note="n")
    stub = Stubber(client)
    stub.add_response(
        "invoke_rest_api",
        {
            "RestApiStatusCode": 200,
            "RestApiResponse": {
                "update": {"success": [f"windows-batch-compute-dag.{RUN_ID}"], "errors": []}
            },
        },
        {"Name": "wb-env", "Path": path, "Method": "PATCH", "Body": body, "QueryParameters": {}},
    )
    # The hook's boto3 client is this stubbed one (MwaaHook.conn is a cached property).
    monkeypatch.setattr(MwaaHook, "conn", client)
    settings = settings_mod.load(
        {
            "AIRFLOW__WINDOWS_BATCH__RUN_NOTE": "mwaa",
            "AIRFLOW__WINDOWS_BATCH__MWAA_ENVIRONMENT": "wb-env",
        }
    )
    with stub:
        assert results.set_run_note(
            settings, dag_id="windows-batch-compute-dag", run_id=RUN_ID, note="n"
        )
        stub.assert_no_pending_responses()


def test_results_view_path_is_relative_and_encodes_the_run_id() -> None:
    path = results.results_view_path(dag_id="windows-batch-compute-dag", run_id=RUN_ID)
    assert not path.startswith("/")
    run = RUN_ID.replace(":", "%3A").replace("+", "%2B")
    assert path == f"dags/windows-batch-compute-dag/runs/{run}/plugin/results"
