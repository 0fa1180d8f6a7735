"""The Results view's app: what it serves for any study's finished, partial and running runs,
to whom, and what not.

The BER study's results are bersim's own (`bersim.aggregate.run_aggregate` over task results
written the way `simulate` writes them); the engine's progress records are the task runner's
names; all in a local folder standing in for S3, or in moto's S3 read through the provider's
S3Hook. Runs are rows of a real metadata database; access is checked by Airflow's
`requires_access_dag` with SimpleAuthManager (see conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bersim.aggregate import run_aggregate
from bersim.result import TaskResult
from bersim.storage import Location, Storage
from windows_batch_results.app import URL_PREFIX, create_app
from windows_batch_results.render import number
from windows_batch_results.store import LocalStore, S3Store

if TYPE_CHECKING:
    from .conftest import Airflow

DAG_ID = "windows-batch-compute-dag"
BUCKET = "view-results"
# (task index, Eb/N0 in dB, bits, errors): 4 tasks over 2 points.
TASKS = [
    (0, 0.0, 200_000, 15_800),
    (1, 0.0, 200_000, 15_650),
    (2, 4.0, 400_000, 5),
    (3, 4.0, 400_000, 9),
]


def location(run_id: str, *, tasks: int = len(TASKS), bucket: str = BUCKET) -> dict[str, Any]:
    """What plan_tasks records for a BER run (planning.results_location)."""
    return {
        "bucket": bucket,
        "outputs": f"s3://{bucket}/sim/aggregate_results/{run_id}/",
        "engine": f"s3://{bucket}/sim/_engine/{run_id}/",
        "progress": f"s3://{bucket}/sim/task_results/{run_id}/",
        "chunks": tasks,
        "work_items": tasks,
        "published": ["results.png", "results.csv", "results.json"],
    }


def task_result(index: int, ebn0_db: float, bits: int, errors: int) -> bytes:
    return TaskResult(
        task_index=index,
        ebn0_db=ebn0_db,
        bits=bits,
        errors=errors,
        seed=1000 + index,
        target_errors=0,
        max_bits=bits,
        elapsed_s=0.1,
        provenance={"octave_version": "test"},
    ).to_json_bytes()


def write_task_results(root: Path, run_id: str, tasks: list[tuple[int, float, int, int]]) -> Path:
    """The task results, and the task runner's record of each finished chunk (one task each)."""
    folder = root / BUCKET / "sim" / "task_results" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    done = root / BUCKET / "sim" / "_engine" / run_id / "chunks" / "done"
    done.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        (folder / f"task-{task[0]:05d}.json").write_bytes(task_result(*task))
        (done / f"{task[0]:05d}-1.json").write_text(
            json.dumps({"chunk": task[0], "items": [{"index": task[0], "status": "done"}]})
        )
    return folder


def aggregate(root: Path, run_id: str, *, expected_tasks: int = len(TASKS)) -> Path:
    output = root / BUCKET / "sim" / "aggregate_results" / run_id
    run_aggregate(
        Storage(),
        input_prefix=Location("file", "", str(root / BUCKET / "sim" / "task_results" / run_id)),
        output_prefix=Location("file", "", str(output)),
        expected_tasks=expected_tasks,
    )
    return output


def client_for(store: Any, token: str | None, bucket: str | None = None) -> TestClient:
    """The app mounted as the API server mounts a plugin's app, with the UI's cookie if any."""
    parent = FastAPI()
    parent.mount(URL_PREFIX, create_app(store=lambda: store, bucket=lambda: bucket))
    client = TestClient(parent)
    if token:
        client.cookies.set("_token", token)
    return client


def page_url(run_id: str, dag_id: str = DAG_ID) -> str:
    return f"{URL_PREFIX}/results/{dag_id}/{urllib.parse.quote(run_id, safe='')}"


def table_rows(page: str) -> list[list[str]]:
    body = page.split('<table id="results-table">', 1)[1].split("<tbody>", 1)[1]
    body = body.split("</tbody>", 1)[0]
    return [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "buckets"


@pytest.fixture
def viewer(airflow: Airflow, root: Path) -> TestClient:
    airflow.add_dag()
    return client_for(LocalStore(root=root), airflow.token(role="viewer"))


def test_finished_run_shows_progress_plot_table_and_downloads(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    run_id = "manual__2026-01-02T03:04:05.678901+00:00"
    airflow.add_run(run_id, state="success", location=location(run_id))
    write_task_results(root, run_id, TASKS)
    output = aggregate(root, run_id)
    document = json.loads((output / "results.json").read_text())

    answer = viewer.get(page_url(run_id))
    assert answer.status_code == 200, answer.text
    page = answer.text
    assert "Run success." in page
    assert "4 of 4 work items done, 0 failed, 0 pending (4 of 4 tasks done)" in page
    assert "missing" not in page
    # The columns are results.json's keys, the interval folded into its value's column.
    headers = re.findall(r'<th data-key="([^"]+)">', page)
    assert headers == ["ebn0_db", "tasks", "bits", "errors", "ber", "ber_theory"]
    assert "ber [95 % interval]" in page
    rows = table_rows(page)
    assert len(rows) == len(document["rows"]) == 2
    for shown, row in zip(rows, document["rows"], strict=True):
        assert shown[0] == f"{row['ebn0_db']:g}"
        assert shown[1:4] == [f"{row['tasks']:,}", f"{row['bits']:,}", f"{row['errors']:,}"]
        low, high = number(row["ber_ci_low"]), number(row["ber_ci_high"])
        assert shown[4] == f"{number(row['ber'])} [{low}, {high}]"
        assert shown[5] == number(row["ber_theory"])
    # The plot and every output file resolve, relative to the page, to the run's own files.
    assert 'src="./' in page
    links = re.findall(r'(?:src|href)="(\./[^"]+/files/[^"]+)"', page)
    names = sorted({link.rsplit("/files/", 1)[1] for link in links})
    assert names == ["items.csv", "results.csv", "results.json", "results.png"]
    for link in links:
        url = urllib.parse.urljoin(page_url(run_id), html.unescape(link))
        name = urllib.parse.unquote(url.rsplit("/files/", 1)[1])
        served = viewer.get(url)
        assert served.status_code == 200, (url, served.text)
        if name != "items.csv":
            assert served.content == (output / name).read_bytes()
    png = viewer.get(page_url(run_id) + "/files/results.png")
    assert png.headers["content-type"] == "image/png"
    assert "attachment" not in png.headers.get("content-disposition", "")
    items = viewer.get(page_url(run_id) + "/files/items.csv").text.splitlines()
    assert items[0] == "chunk,item,work_items,status,exit_code,elapsed_s,outputs"
    assert len(items) == 5


def test_partial_run_lists_missing_tasks(airflow: Airflow, root: Path, viewer: TestClient) -> None:
    run_id = "manual__partial"
    airflow.add_run(run_id, state="failed", location=location(run_id, tasks=6))
    write_task_results(root, run_id, TASKS)
    aggregate(root, run_id, expected_tasks=6)

    page = viewer.get(page_url(run_id)).text
    assert "Run failed: some work is missing or failed." in page
    assert "4 of 6 work items done, 0 failed, 2 pending" in page
    missing = re.search(r'id="missing-tasks">(.*?)</p>', page)
    assert missing is not None
    assert "2 of 6 task results missing" in missing.group(1)
    assert "tasks 4, 5" in missing.group(1)
    assert len(table_rows(page)) == 2


def test_a_running_run_counts_work_items_not_json_files(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    run_id = "manual__running"
    airflow.add_run(run_id, state="running", location=location(run_id))
    write_task_results(root, run_id, TASKS[:3])
    # A stray JSON file among the outputs is not progress (the old view counted *.json files).
    stray = root / BUCKET / "sim" / "aggregate_results" / run_id / "notes.json"
    stray.parent.mkdir(parents=True)
    stray.write_text("{}")

    answer = viewer.get(page_url(run_id))
    assert answer.status_code == 200
    assert "Still running. 3 of 4 work items done, 0 failed, 1 pending" in answer.text
    assert 'http-equiv="refresh"' in answer.text
    assert viewer.get(page_url(run_id) + "/files/results.png").status_code == 404


def test_a_template_study_s_outputs_plot_and_table(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    airflow.add_dag("option-pricing", study="option_pricing", prefix="studies/option_pricing")
    run_id = "manual__prices"
    own = f"s3://{BUCKET}/studies/option_pricing"
    record = {
        "outputs": f"{own}/runs/{run_id}/",
        "engine": f"{own}/_engine/{run_id}/",
        "chunks": 2,
        "work_items": 20,
    }
    airflow.add_run(run_id, state="success", location=record, dag_id="option-pricing")
    base = root / BUCKET / "studies" / "option_pricing"
    done = base / "_engine" / run_id / "chunks" / "done"
    done.mkdir(parents=True)
    (done / "00000-10.json").write_text("{}")
    (done / "00001-10.json").write_text("{}")
    results = base / "runs" / run_id / "Results"
    (results / "strike-100").mkdir(parents=True)
    (results / "strike-100" / "batches-1-10.json").write_text("{}")
    (results / "results.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (results / "results.json").write_text(
        json.dumps(
            {
                "summary": "1 strike, 200 paths",
                "columns": {"strike": "Strike"},
                "rows": [{"strike": 100, "price": 9.5, "price_ci_low": 9.4, "price_ci_high": 9.6}],
            }
        )
    )
    page = viewer.get(page_url(run_id, "option-pricing")).text
    assert "20 of 20 work items done" in page
    assert "1 strike, 200 paths" in page
    assert "Results/results.png" in page
    assert re.findall(r'<th data-key="([^"]+)">', page) == ["strike", "price"]
    assert "3 files" in page


def test_a_run_not_planned_yet(airflow: Airflow, viewer: TestClient) -> None:
    airflow.add_run("manual__queued", state="queued", location=None)
    answer = viewer.get(page_url("manual__queued"))
    assert answer.status_code == 200
    assert "Still running." in answer.text


def test_values_from_a_results_file_are_escaped_and_only_the_view_s_script_may_run(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    """A results file is written by the study's containers: it must never become markup."""
    run_id = "manual__planted"
    airflow.add_run(run_id, state="failed", location=location(run_id))
    output = root / BUCKET / "sim" / "aggregate_results" / run_id
    output.mkdir(parents=True)
    planted = '<img src=x onerror="alert(1)">'
    (output / "results.json").write_text(
        json.dumps(
            {
                "summary": planted,
                "columns": {"a": planted},
                "interval": {"confidence": planted, "method": planted},
                "theory": planted,
                "missing_tasks": [planted, 3],
                "expected_tasks": planted,
                "rows": [{"a": planted, planted: 1}],
            }
        )
    )
    (output / f"{planted}.csv").write_text("x")
    answer = viewer.get(page_url(run_id))
    assert answer.status_code == 200
    page = answer.text
    assert "<img src=x" not in page
    assert 'onerror="alert' not in page
    assert html.escape(planted) in page
    # Only whole numbers are task indexes; a planted string is not listed.
    missing = re.search(r'id="missing-tasks">(.*?)</p>', page)
    assert missing is not None
    assert missing.group(1).endswith("tasks 3</p>") or "tasks 3" in missing.group(1)
    # The page's own script is the one its policy allows, by hash; nothing else may run.
    policy = answer.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy


def test_files_are_served_as_data_never_as_pages(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    run_id = "manual__files"
    airflow.add_run(run_id, state="success", location=location(run_id))
    output = root / BUCKET / "sim" / "aggregate_results" / run_id
    output.mkdir(parents=True)
    (output / "report.html").write_text("<script>alert(1)</script>")
    (output / "sub").mkdir()
    (output / "sub" / "plot.png").write_bytes(b"\x89PNG")
    page = viewer.get(page_url(run_id) + "/files/report.html")
    assert page.status_code == 200
    assert page.headers["content-disposition"] == 'attachment; filename="report.html"'
    assert page.headers["content-type"] == "application/octet-stream"
    assert "sandbox" in page.headers["content-security-policy"]
    image = viewer.get(page_url(run_id) + "/files/sub/plot.png")
    assert image.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        pytest.param(page_url("manual__nobody-ran-this"), "no such run", id="unknown-run"),
        pytest.param(
            page_url("manual__nobody-ran-this") + "/files/results.png",
            "no such run",
            id="unknown-run-file",
        ),
        pytest.param(page_url("manual__finished", "other-dag"), "other DAG", id="other-dag"),
        pytest.param(page_url("manual__finished", "not-a-study"), "untagged", id="not-a-study"),
    ],
)
def test_unknown_runs_and_other_dags_are_not_found(
    airflow: Airflow, root: Path, viewer: TestClient, path: str, why: str
) -> None:
    airflow.add_dag("not-a-study", engine=False)
    answer = viewer.get(path)
    assert answer.status_code == 404, why
    assert "<img" not in answer.text


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("..%2F..%2Ftask_results%2Fmanual__secret%2Ftask-00000.json", id="encoded-up"),
        pytest.param("%2E%2E%2Fresults.json", id="dot-dot-encoded"),
        pytest.param("%2e%2e", id="parent-encoded"),
        pytest.param("results.json%00.png", id="nul-byte"),
        pytest.param("sub/../../results.json", id="climbs"),
        pytest.param("%2Fetc%2Fpasswd", id="absolute"),
    ],
)
def test_traversal_is_refused(airflow: Airflow, root: Path, viewer: TestClient, name: str) -> None:
    run_id = "manual__secret"
    airflow.add_run(run_id, state="success", location=location(run_id))
    write_task_results(root, run_id, TASKS)
    aggregate(root, run_id)
    (root / "outside.json").write_text('{"secret": true}')
    answer = viewer.get(f"{page_url(run_id)}/files/{name}")
    assert answer.status_code == 404
    assert b"secret" not in answer.content
    assert b"task_index" not in answer.content


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({"outputs": f"s3://{BUCKET}/sim/aggregate_results/../../../"}, "climbs"),
        pytest.param({"outputs": f"s3://{BUCKET}/other_study/runs/x/"}, "another prefix"),
        pytest.param({"outputs": "s3://someone-elses-bucket/sim/x/"}, "another bucket"),
        pytest.param({"engine": f"s3://{BUCKET}/private/"}, "records elsewhere"),
    ],
)
def test_a_rewritten_results_location_is_refused_not_followed(
    airflow: Airflow, root: Path, change: dict[str, str], why: str
) -> None:
    """XCom can be edited through the REST API: its record is believed only within the
    deployment's bucket and the study's own prefix (from the DAG's tags)."""
    airflow.add_dag()
    run_id = f"manual__rewritten-{abs(hash(why))}"
    airflow.add_run(run_id, state="success", location={**location(run_id), **change})
    for folder in (root / "someone-elses-bucket" / "sim" / "x", root / BUCKET / "other_study"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text('{"rows": [], "secret": true}')
    viewer = client_for(LocalStore(root=root), airflow.token(role="viewer"), bucket=BUCKET)
    for path in (page_url(run_id), page_url(run_id) + "/files/results.json"):
        answer = viewer.get(path)
        assert answer.status_code == 404, why
        assert b"secret" not in answer.content


@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param("missing", 401, id="no-login"),
        pytest.param(None, 403, id="user-without-role"),
        pytest.param("viewer", 200, id="viewer"),
    ],
)
def test_same_access_as_the_ui(airflow: Airflow, root: Path, role: str | None, status: int) -> None:
    airflow.add_dag()
    run_id = "manual__access"
    airflow.add_run(run_id, state="success", location=location(run_id))
    write_task_results(root, run_id, TASKS)
    aggregate(root, run_id)
    token = None if role == "missing" else airflow.token(role=role)
    client = client_for(LocalStore(root=root), token)
    for path in (page_url(run_id), page_url(run_id) + "/files/results.json"):
        assert client.get(path).status_code == status, path


def test_s3_through_s3hook(airflow: Airflow, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On AWS the same run is read from S3 (moto) through the provider's S3Hook."""
    boto3 = pytest.importorskip("boto3")
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", '{"conn_type": "aws"}')
    airflow.add_dag()
    run_id, running_id = "manual__on-s3", "manual__on-s3-running"
    airflow.add_run(run_id, state="success", location=location(run_id))
    airflow.add_run(running_id, state="running", location=location(running_id))
    write_task_results(root, run_id, TASKS)
    write_task_results(root, running_id, TASKS[:2])
    aggregate(root, run_id)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        for path in (root / BUCKET).rglob("*"):
            if path.is_file():
                s3.put_object(
                    Bucket=BUCKET, Key=str(path.relative_to(root / BUCKET)), Body=path.read_bytes()
                )
        client = client_for(
            S3Store(aws_conn_id="aws_default", region="us-east-1"),
            airflow.token(role="viewer"),
            bucket=BUCKET,
        )
        page = client.get(page_url(run_id))
        assert page.status_code == 200, page.text
        assert len(table_rows(page.text)) == 2
        png = client.get(page_url(run_id) + "/files/results.png")
        assert png.status_code == 200
        key = f"sim/aggregate_results/{run_id}/results.png"
        assert png.content == s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        running = client.get(page_url(running_id)).text
        assert "Still running. 2 of 4 work items done" in running
        assert client.get(page_url(running_id) + "/files/results.json").status_code == 404


def test_the_run_note_links_to_this_view() -> None:
    """The note's link (dags/windows_batch/results.py) is the tab this plugin registers."""
    from windows_batch import results
    from windows_batch_results.app import VIEW

    assert VIEW["destination"] == "dag_run"
    assert VIEW["url_route"] == results.RESULTS_VIEW_ROUTE
    assert results.results_view_path(dag_id=DAG_ID, run_id="r").endswith(
        f"/runs/r/plugin/{VIEW['url_route']}"
    )
