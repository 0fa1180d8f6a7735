"""The Results view, used the way a person uses it: from a finished run's page, one click.

Real Airflow (`airflow standalone`, local backend, plugins/ loaded as on MWAA) and headless
Chromium. The run is the small study another test already finished when there is one
(conftest.py's `finished_run`), so this module adds no study of its own to the suite.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .conftest import AirflowUI, FinishedRun

DAG_ID = "windows-batch-compute-dag"
pytestmark = [pytest.mark.browser, pytest.mark.airflow]


@pytest.mark.screenshots
def test_results_tab_shows_plot_and_table(
    page: Any, airflow_ui: AirflowUI, finished_run: FinishedRun, screenshots_dir: Path | None
) -> None:
    document = json.loads((finished_run.results_dir / "results.json").read_text())
    run = urllib.parse.quote(finished_run.run_id, safe="")
    page.goto(f"{airflow_ui.url}/dags/{DAG_ID}/runs/{run}")

    tab = page.get_by_role("link", name="Results", exact=True)
    tab.wait_for()
    tab.click()
    page.wait_for_url(f"**/dags/{DAG_ID}/runs/**/plugin/results")

    view = page.frame_locator('iframe[title="Results"]')
    plot = view.locator("#results-plot")
    plot.wait_for()
    size = plot.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
    width, height = size
    assert width > 100, f"the plot did not render: natural size {size}"
    assert height > 100, f"the plot did not render: natural size {size}"
    rows = view.locator("#results-table tbody tr")
    assert rows.count() == len(document["rows"]), rows.all_inner_texts()
    shown_points = [r.locator("td").first.inner_text() for r in rows.all()]
    assert shown_points == [f"{row['ebn0_db']:g}" for row in document["rows"]]
    headers = view.locator("#results-table th").all_inner_texts()
    assert len(headers) == 6, headers
    assert "interval" in " ".join(headers), headers
    if screenshots_dir is not None:
        page.screenshot(path=str(screenshots_dir / "results-view.png"))

    with page.expect_download() as download:
        view.get_by_role("link", name="results.csv").click()
    saved = Path(download.value.path())
    assert saved.read_bytes() == (finished_run.results_dir / "results.csv").read_bytes()

    # The run note's link (its first line, shown on the run's page) leads to the same view.
    page.goto(f"{airflow_ui.url}/dags/{DAG_ID}/runs/{run}")
    note_link = page.get_by_role("link", name="results.png").first
    href = note_link.evaluate("a => [a.href, a.target]")
    assert href[0] == f"{airflow_ui.url}/dags/{DAG_ID}/runs/{run}/plugin/results", href
    page.goto(href[0])
    page.frame_locator('iframe[title="Results"]').locator("#results-table").wait_for()


def test_results_view_refuses_unknown_runs(page: Any, airflow_ui: AirflowUI) -> None:
    """The API server answers 404 for a run id its database does not know."""
    answer = page.request.get(
        f"{airflow_ui.url}/windows-batch/results/{DAG_ID}/manual__never-ran/files/results.png"
    )
    assert answer.status == 404
