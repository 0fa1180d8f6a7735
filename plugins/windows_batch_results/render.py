"""The Results view as one self-contained HTML page (inline CSS, no external assets).

The table is built from results.json alone: one column per key of its rows, in their order; a
key `k` with `k_ci_low` and `k_ci_high` beside it is shown as one column "k [low, high]", with
the confidence results.json states (`interval.confidence`). A study may name its columns with an
optional `columns` object in results.json (`{"key": "title"}`); otherwise the key is the title.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MISSING_SHOWN = 50
REFRESH_S = 15
"""While a run is going, the page reloads itself this often."""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: #1a202c; }
h1 { font-size: 1.25rem; margin: 0 0 .5rem; }
.status { padding: .5rem .75rem; border-radius: .375rem; background: #edf2f7; }
.status.running { background: #fefcbf; }
.status.partial, .status.failed { background: #fed7d7; }
.results { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; margin-top: 1rem; }
.plot { flex: 1 1 380px; max-width: 640px; height: auto; border: 1px solid #e2e8f0; }
.side { flex: 1 1 380px; }
table { border-collapse: collapse; margin: 0 0 1rem; }
th, td { border: 1px solid #cbd5e0; padding: .25rem .6rem; text-align: right; }
th { background: #f7fafc; }
.downloads a { margin-right: 1rem; }
.note { color: #4a5568; font-size: .9rem; }
"""

# Downloads from inside the Airflow UI's sandboxed iframe (no allow-downloads) are blocked; the
# iframe is same-origin, so the click is handed to the top window, which may download.
_DOWNLOAD_JS = """
document.querySelectorAll('a[download]').forEach(function (link) {
  link.addEventListener('click', function (event) {
    try {
      if (window.top === window) return;
      var doc = window.top.document, copy = doc.createElement('a');
      copy.href = link.href; copy.download = link.getAttribute('download');
      doc.body.appendChild(copy); copy.click(); copy.remove(); event.preventDefault();
    } catch (err) { /* not same-origin: let the browser follow the link */ }
  });
});
"""


@dataclass(frozen=True)
class Column:
    """One column of the results table: the row key, its title, and its interval keys if any."""

    key: str
    title: str
    interval: tuple[str, str] | None = None


def columns(document: Mapping[str, Any]) -> list[Column]:
    """The table's columns, from the keys of results.json's rows (see the module docstring)."""
    keys: list[str] = []
    for row in document.get("rows") or []:
        keys += [k for k in row if k not in keys]
    named = document.get("columns")
    titles: Mapping[str, Any] = named if isinstance(named, Mapping) else {}
    confidence = (document.get("interval") or {}).get("confidence")
    level = f"{float(confidence) * 100:g} % " if isinstance(confidence, int | float) else ""
    bounds = {f"{k}_ci_low" for k in keys} | {f"{k}_ci_high" for k in keys}
    found: list[Column] = []
    for key in keys:
        if key in bounds and key.rsplit("_ci_", 1)[0] in keys:
            continue
        low, high = f"{key}_ci_low", f"{key}_ci_high"
        title = str(titles.get(key) or key)
        if low in keys and high in keys:
            found.append(Column(key, f"{title} [{level}interval]", (low, high)))
        else:
            found.append(Column(key, title))
    return found


def number(value: Any) -> str:
    """A cell: integers with thousands separators, floats to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _cell(row: Mapping[str, Any], column: Column) -> str:
    text = number(row.get(column.key))
    if column.interval:
        low, high = (number(row.get(k)) for k in column.interval)
        text += f" [{low}, {high}]"
    return html.escape(text)


def table_html(document: Mapping[str, Any]) -> str:
    """The results table (header and one row per entry of results.json's `rows`)."""
    cols = columns(document)
    head = "".join(f'<th data-key="{html.escape(c.key)}">{html.escape(c.title)}</th>' for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row, c)}</td>" for c in cols) + "</tr>"
        for row in document.get("rows") or []
    )
    return f'<table id="results-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def missing_html(document: Mapping[str, Any]) -> str:
    """The missing task indexes, if any."""
    missing: Sequence[Any] = document.get("missing_tasks") or []
    if not missing:
        return ""
    shown = ", ".join(str(i) for i in missing[:MISSING_SHOWN])
    more = f", ... ({len(missing) - MISSING_SHOWN} more)" if len(missing) > MISSING_SHOWN else ""
    expected = document.get("expected_tasks")
    of = f" of {expected}" if expected is not None else ""
    return (
        f'<p class="status partial" id="missing-tasks"><strong>{len(missing)}{of} task results '
        f"missing</strong> (the figures above are without them): tasks {shown}{more}</p>"
    )


def _files_href(run_id: str, name: str) -> str:
    # Relative to the page (…/results/<dag>/<run>): the run id encoded, ':' included.
    return f"./{urllib.parse.quote(run_id, safe='')}/files/{name}"


def page(
    *,
    dag_id: str,
    run_id: str,
    state: str,
    running: bool,
    document: Mapping[str, Any] | None,
    task_results: int | None,
    expected_tasks: int | None,
    files: Sequence[str],
) -> str:
    """The whole page for one run: status, then the plot, table, missing tasks and downloads."""
    esc = html.escape
    if document is not None:
        partial = bool(document.get("missing_tasks"))
        css = "partial" if partial else ("running" if running else "")
        status = (
            "Still running (results already aggregated)"
            if running
            else f"Run {esc(state)}" + (": some task results are missing" if partial else "")
        )
        figures = ", ".join(
            f"{number(document.get(k))} {k}"
            for k in ("tasks", "bits", "errors")
            if document.get(k) is not None
        )
        body = f'<p class="status {css}" id="status">{status}. {esc(figures)}</p>'
        body += '<div class="results">'
        if "results.png" in files:
            body += (
                f'<img class="plot" id="results-plot" src="{_files_href(run_id, "results.png")}" '
                f'alt="results.png of run {esc(run_id)}">'
            )
        body += '<div class="side">' + table_html(document) + missing_html(document)
        notes = []
        interval = document.get("interval") or {}
        if interval.get("method"):
            notes.append(f"interval: {interval['method']}")
        if document.get("theory"):
            notes.append(f"theory: {document['theory']}")
        if notes:
            body += f'<p class="note">{esc("; ".join(notes))}</p>'
        links = "".join(
            f'<a href="{_files_href(run_id, name)}" download="{name}">{name}</a>' for name in files
        )
        body += f'<p class="downloads" id="downloads">Download: {links}</p></div></div>'
    else:
        count = "no" if not task_results else str(task_results)
        of = f" (of {expected_tasks})" if expected_tasks is not None else ""
        if running:
            text = f"Still running: {count} task results so far{of}."
            body = f'<p class="status running" id="status">{esc(text)}</p>'
            body += f'<p class="note">This page reloads every {REFRESH_S} s.</p>'
        else:
            text = (
                f"This run ended ({state}) without publishing results: {count} task results "
                f"were written{of}. See the aggregate task's log."
            )
            body = f'<p class="status failed" id="status">{esc(text)}</p>'
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if running else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"{refresh}<title>Results: {esc(run_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Results of {esc(dag_id)}, run {esc(run_id)}</h1>{body}"
        f"<script>{_DOWNLOAD_JS}</script></body></html>"
    )


def error_page(*, status_code: int, message: str) -> str:
    """A short page for a refused request (unknown run, other DAG, bad file name)."""
    esc = html.escape
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{status_code}</title>"
        f"<style>{_CSS}</style></head><body><h1>Results</h1>"
        f'<p class="status failed" id="status">{esc(message)}</p></body></html>'
    )
