"""The Results view's app: what it serves for finished, partial and running runs, and what not.

The results are bersim's own (`bersim.aggregate.run_aggregate` over task results written the way
`simulate` writes them), in a local folder standing in for S3, or in moto's S3 read through the
provider's S3Hook. Runs are rows of a real metadata database; access is checked by Airflow's
`requires_access_dag` with SimpleAuthManager (see conftest.py).
"""

from __future__ import annotations

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


def plan(run_id: str, *, expected_tasks: int = len(TASKS)) -> list[str]:
    """The aggregate command plan_tasks pushes (dags/windows_batch/plan.py's aggregate_argv)."""
    return [
        "aggregate",
        "--input",
        f"s3://{BUCKET}/sim/task_results/{run_id}/",
        "--output",
        f"s3://{BUCKET}/sim/aggregate_results/{run_id}/",
        "--expected-tasks",
        str(expected_tasks),
    ]


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
    folder = root / BUCKET / "sim" / "task_results" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        (folder / f"task-{task[0]:05d}.json").write_bytes(task_result(*task))
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


def client_for(store: Any, token: str | None) -> TestClient:
    """The app mounted as the API server mounts a plugin's app, with the UI's cookie if any."""
    parent = FastAPI()
    parent.mount(URL_PREFIX, create_app(store=lambda: store))
    client = TestClient(parent)
    if token:
        client.cookies.set("_token", token)
    return client


def page_url(run_id: str, dag_id: str = DAG_ID) -> str:
    return f"{URL_PREFIX}/results/{dag_id}/{urllib.parse.quote(run_id, safe='')}"


def table_rows(page: str) -> list[list[str]]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "buckets"


@pytest.fixture
def viewer(airflow: Airflow, root: Path) -> TestClient:
    return client_for(LocalStore(root=root), airflow.token(role="viewer"))


def test_finished_run_shows_plot_table_and_downloads(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    run_id = "manual__2026-01-02T03:04:05.678901+00:00"
    airflow.add_run(run_id, state="success", aggregate_command=plan(run_id))
    write_task_results(root, run_id, TASKS)
    output = aggregate(root, run_id)
    document = json.loads((output / "results.json").read_text())

    answer = viewer.get(page_url(run_id))
    assert answer.status_code == 200, answer.text
    page = answer.text
    assert "Run success" in page
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
    # The plot and every download resolve, relative to the page, to the run's own files.
    links = re.findall(r'(?:src|href)="(\./[^"]+)"', page)
    assert len(links) == 4
    for link in links:
        url = urllib.parse.urljoin(page_url(run_id), link)
        name = url.rsplit("/", 1)[1]
        served = viewer.get(url)
        assert served.status_code == 200, (url, served.text)
        assert served.content == (output / name).read_bytes()
    png = viewer.get(urllib.parse.urljoin(page_url(run_id), links[0]))
    assert png.headers["content-type"] == "image/png"


def test_partial_run_lists_missing_tasks(airflow: Airflow, root: Path, viewer: TestClient) -> None:
    run_id = "manual__partial"
    airflow.add_run(run_id, state="failed", aggregate_command=plan(run_id, expected_tasks=6))
    write_task_results(root, run_id, TASKS)
    aggregate(root, run_id, expected_tasks=6)

    page = viewer.get(page_url(run_id)).text
    assert "Run failed: some task results are missing" in page
    missing = re.search(r'id="missing-tasks">(.*?)</p>', page)
    assert missing is not None
    assert "2 of 6 task results missing" in missing.group(1)
    assert "tasks 4, 5" in missing.group(1)
    assert len(table_rows(page)) == 2


def test_run_still_going_counts_task_results(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    run_id = "manual__running"
    airflow.add_run(run_id, state="running", aggregate_command=plan(run_id))
    write_task_results(root, run_id, TASKS[:3])

    answer = viewer.get(page_url(run_id))
    assert answer.status_code == 200
    assert "Still running: 3 task results so far (of 4)." in answer.text
    assert 'http-equiv="refresh"' in answer.text
    assert viewer.get(page_url(run_id) + "/files/results.png").status_code == 404


def test_run_not_planned_yet(airflow: Airflow, viewer: TestClient) -> None:
    airflow.add_run("manual__queued", state="queued", aggregate_command=None)
    answer = viewer.get(page_url("manual__queued"))
    assert answer.status_code == 200
    assert "Still running: no task results so far." in answer.text


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
    ],
)
def test_unknown_runs_and_other_dags_are_not_found(
    airflow: Airflow, root: Path, viewer: TestClient, path: str, why: str
) -> None:
    answer = viewer.get(path)
    assert answer.status_code == 404, why
    assert "<img" not in answer.text


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("..%2F..%2Ftask_results%2Fmanual__secret%2Ftask-00000.json", id="encoded-up"),
        pytest.param("%2E%2E%2Fresults.json", id="dot-dot-encoded"),
        pytest.param("task-00000.json", id="not-published"),
        pytest.param("%2e%2e", id="parent-encoded"),
        pytest.param("results.json%00.png", id="nul-byte"),
    ],
)
def test_traversal_is_refused(airflow: Airflow, root: Path, viewer: TestClient, name: str) -> None:
    run_id = "manual__secret"
    airflow.add_run(run_id, state="success", aggregate_command=plan(run_id))
    write_task_results(root, run_id, TASKS)
    aggregate(root, run_id)
    (root / "outside.json").write_text('{"secret": true}')
    answer = viewer.get(f"{page_url(run_id)}/files/{name}")
    assert answer.status_code == 404
    assert b"secret" not in answer.content
    assert b"task_index" not in answer.content


def test_traversal_through_the_planned_location_is_refused(
    airflow: Airflow, root: Path, viewer: TestClient
) -> None:
    """A results location that climbs out of its prefix is refused, not followed."""
    run_id = "manual__climbs"
    command = plan(run_id)
    command[command.index("--output") + 1] = f"s3://{BUCKET}/sim/aggregate_results/../../../"
    airflow.add_run(run_id, state="success", aggregate_command=command)
    (root / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text('{"rows": [], "secret": true}')
    for path in (page_url(run_id), page_url(run_id) + "/files/results.json"):
        answer = viewer.get(path)
        assert answer.status_code == 404
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
    run_id = "manual__access"
    airflow.add_run(run_id, state="success", aggregate_command=plan(run_id))
    write_task_results(root, run_id, TASKS)
    aggregate(root, run_id)
    token = None if role == "missing" else airflow.token(role=role)
    client = client_for(LocalStore(root=root), token)
    for path in (page_url(run_id), page_url(run_id) + "/files/results.json"):
        assert client.get(path).status_code == status, path


def test_s3_through_s3hook(
    airflow: Airflow, root: Path, viewer: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On AWS the same run is read from S3 (moto) through the provider's S3Hook."""
    boto3 = pytest.importorskip("boto3")
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", '{"conn_type": "aws"}')
    run_id, running_id = "manual__on-s3", "manual__on-s3-running"
    airflow.add_run(run_id, state="success", aggregate_command=plan(run_id))
    airflow.add_run(running_id, state="running", aggregate_command=plan(running_id))
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
            S3Store(aws_conn_id="aws_default", region="us-east-1"), airflow.token(role="viewer")
        )
        page = client.get(page_url(run_id))
        assert page.status_code == 200, page.text
        assert len(table_rows(page.text)) == 2
        png = client.get(page_url(run_id) + "/files/results.png")
        assert png.status_code == 200
        assert (
            png.content
            == s3.get_object(Bucket=BUCKET, Key=f"sim/aggregate_results/{run_id}/results.png")[
                "Body"
            ].read()
        )
        assert (
            "Still running: 2 task results so far (of 4)." in client.get(page_url(running_id)).text
        )
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
