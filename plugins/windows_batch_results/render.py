"""The Results view as one self-contained HTML page (inline CSS, one inline script, no assets).

Any study: the run's progress (work items done, failed, pending), its plot and table when the
study publishes them (a `results.json` with `rows`, and a PNG), and its output files with
downloads. Everything a results file says is written by the study's containers, so every value
is escaped and a number shows only if it is a number; the page's Content-Security-Policy lets no
script run but the page's own (`PAGE_CSP`, by hash).

The table is built from results.json alone: one column per key of its rows, in their order; a
key `k` with `k_ci_low` and `k_ci_high` beside it is shown as one column "k [low, high]", with
the confidence results.json states (`interval.confidence`). A study may name its columns with an
optional `columns` object (`{"key": "title"}`) and give a one-line `summary`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MISSING_SHOWN = 50
FILES_SHOWN = 200
REFRESH_S = 15
"""While a run is going, the page reloads itself this often."""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: #1a202c; }
h1 { font-size: 1.25rem; margin: 0 0 .5rem; }
h2 { font-size: 1rem; margin: 1rem 0 .25rem; }
.status { padding: .5rem .75rem; border-radius: .375rem; background: #edf2f7; }
.status.running { background: #fefcbf; }
.status.partial, .status.failed { background: #fed7d7; }
.results { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; margin-top: 1rem; }
.plot { flex: 1 1 380px; max-width: 640px; height: auto; border: 1px solid #e2e8f0; }
.side { flex: 1 1 380px; }
table { border-collapse: collapse; margin: 0 0 1rem; }
th, td { border: 1px solid #cbd5e0; padding: .25rem .6rem; text-align: right; }
th { background: #f7fafc; }
.files td { text-align: left; }
.downloads a { margin-right: 1rem; }
.note { color: #4a5568; font-size: .9rem; }
"""

# Downloads from inside the Airflow UI's sandboxed iframe (no allow-downloads) are blocked; the
# iframe is same-origin, so the click is handed to the top window, which may download.
DOWNLOAD_JS = """
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
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(DOWNLOAD_JS.encode()).digest()).decode()
PAGE_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)
"""Only the page's own script runs (CSP Level 2 hash source), whatever a results file holds."""
FILE_CSP = "default-src 'none'; sandbox"
"""A served file is data, never a page: no script, no origin (sandbox), even if it is HTML."""


@dataclass(frozen=True)
class Column:
    """One column of the results table: the row key, its title, and its interval keys if any."""

    key: str
    title: str
    interval: tuple[str, str] | None = None


def columns(document: Mapping[str, Any]) -> list[Column]:
    """The table's columns, from the keys of results.json's rows (see the module docstring)."""
    keys: list[str] = []
    for row in _rows(document):
        keys += [str(k) for k in row if str(k) not in keys]
    named = document.get("columns")
    titles: Mapping[str, Any] = named if isinstance(named, Mapping) else {}
    interval = document.get("interval")
    confidence = interval.get("confidence") if isinstance(interval, Mapping) else None
    level = ""
    if isinstance(confidence, int | float) and _is_number(confidence) and 0 < confidence < 1:
        level = f"{float(confidence) * 100:g} % "
    bounds = {f"{k}_ci_low" for k in keys} | {f"{k}_ci_high" for k in keys}
    found: list[Column] = []
    for key in keys:
        if key in bounds and key.rsplit("_ci_", 1)[0] in keys:
            continue
        low, high = f"{key}_ci_low", f"{key}_ci_high"
        title = titles.get(key)
        title_text = title if isinstance(title, str) and title else key
        if low in keys and high in keys:
            found.append(Column(key, f"{title_text} [{level}interval]", (low, high)))
        else:
            found.append(Column(key, title_text))
    return found


def _rows(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rows = document.get("rows")
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))
    )


def number(value: Any) -> str:
    """A cell: integers with thousands separators, floats to 4 significant digits; text as it
    is (escaped where it is written), anything else (lists, objects) not at all."""
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            text = "0" if value == 0 else str(value)
        else:
            text = f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    elif isinstance(value, str):
        text = value[:200]
    else:
        text = ""
    return text


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
        for row in _rows(document)
    )
    return f'<table id="results-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def missing_html(document: Mapping[str, Any]) -> str:
    """The missing task indexes a study lists (whole numbers only), if any."""
    raw = document.get("missing_tasks")
    missing: Sequence[Any] = raw if isinstance(raw, list) else []
    indexes = [m for m in missing if isinstance(m, int) and not isinstance(m, bool)]
    if not indexes:
        return ""
    shown = ", ".join(str(i) for i in indexes[:MISSING_SHOWN])
    more = f", ... ({len(indexes) - MISSING_SHOWN} more)" if len(indexes) > MISSING_SHOWN else ""
    expected = document.get("expected_tasks")
    of = f" of {expected:,}" if isinstance(expected, int) and not isinstance(expected, bool) else ""
    return (
        f'<p class="status partial" id="missing-tasks"><strong>{len(indexes)}{of} task results '
        f"missing</strong> (the figures above are without them): tasks {shown}{more}</p>"
    )


def files_href(run_id: str, name: str) -> str:
    """A file's URL relative to the page (…/results/<dag>/<run>): the run id encoded."""
    return f"./{urllib.parse.quote(run_id, safe='')}/files/{urllib.parse.quote(name)}"


@dataclass(frozen=True)
class Progress:
    """What the page says about the fan-out's work items and tasks."""

    work_items: int
    items_done: int
    items_failed: int
    chunks: int
    chunks_done: int
    failed_chunks: tuple[int, ...]

    def text(self) -> str:
        pending = max(self.work_items - self.items_done - self.items_failed, 0)
        line = (
            f"{self.items_done:,} of {self.work_items:,} work items done, "
            f"{self.items_failed:,} failed, {pending:,} pending "
            f"({self.chunks_done:,} of {self.chunks:,} tasks done"
        )
        if self.failed_chunks:
            shown = ", ".join(str(c) for c in self.failed_chunks[:20])
            more = (
                f" and {len(self.failed_chunks) - 20} more" if len(self.failed_chunks) > 20 else ""
            )
            line += f"; failed tasks {shown}{more}"
        return line + ")"


def page(
    *,
    dag_id: str,
    run_id: str,
    state: str,
    running: bool,
    progress: Progress | None,
    document: Mapping[str, Any] | None,
    plot: str | None,
    files: Sequence[tuple[str, int]],
    file_count: int,
    file_bytes: int,
) -> str:
    """The whole page for one run (see the module docstring)."""
    esc = html.escape
    partial = bool(document and missing_html(document)) or bool(
        progress and (progress.items_failed or progress.failed_chunks)
    )
    css = "running" if running else ("partial" if partial else "")
    if running:
        status = "Still running"
    else:
        status = f"Run {state}" + (": some work is missing or failed" if partial else "")
    lines = [status + "."]
    if progress is not None:
        lines.append(progress.text() + ".")
    summary = document.get("summary") if document else None
    if isinstance(summary, str) and summary.strip():
        lines.append(summary.strip()[:300])
    body = f'<p class="status {css}" id="status">{esc(" ".join(lines))}</p>'
    if running:
        body += f'<p class="note">This page reloads every {REFRESH_S} s.</p>'
    body += '<div class="results">'
    if plot is not None:
        body += (
            f'<img class="plot" id="results-plot" src="{esc(files_href(run_id, plot))}" '
            f'alt="{esc(plot)} of run {esc(run_id)}">'
        )
    body += '<div class="side">'
    if document is not None:
        body += table_html(document) + missing_html(document)
        notes = []
        interval = document.get("interval")
        if isinstance(interval, Mapping) and isinstance(interval.get("method"), str):
            notes.append(f"interval: {interval['method']}")
        if isinstance(document.get("theory"), str):
            notes.append(f"theory: {document['theory']}")
        if notes:
            body += f'<p class="note">{esc("; ".join(notes))}</p>'
    body += files_html(run_id, files, file_count=file_count, file_bytes=file_bytes)
    body += "</div></div>"
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if running else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"{refresh}<title>Results: {esc(run_id)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Results of {esc(dag_id)}, run {esc(run_id)}</h1>{body}"
        f"<script>{DOWNLOAD_JS}</script></body></html>"
    )


def files_html(
    run_id: str, files: Sequence[tuple[str, int]], *, file_count: int, file_bytes: int
) -> str:
    """The output files (the first FILES_SHOWN) with downloads, and the per-item detail."""
    esc = html.escape
    items = f'<a href="{esc(files_href(run_id, "items.csv"))}" download="items.csv">items.csv</a>'
    head = (
        f'<h2>Output files</h2><p class="note" id="file-count">{file_count:,} files, '
        f"{_size(file_bytes)} in all. Each work item's status, exit code and time: {items}</p>"
    )
    if not files:
        return head
    rows = "".join(
        f'<tr><td><a href="{esc(files_href(run_id, name))}" '
        f'download="{esc(name.rsplit("/", 1)[-1])}">{esc(name)}</a></td>'
        f"<td>{esc(_size(size))}</td></tr>"
        for name, size in files[:FILES_SHOWN]
    )
    more = ""
    if file_count > len(files[:FILES_SHOWN]):
        more = f'<p class="note">… and {file_count - len(files[:FILES_SHOWN]):,} more files.</p>'
    return f'{head}<table class="files" id="downloads"><tbody>{rows}</tbody></table>{more}'


def _size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


def error_page(*, status_code: int, message: str) -> str:
    """A short page for a refused request (unknown run, other DAG, bad file name)."""
    esc = html.escape
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{status_code}</title>"
        f"<style>{_CSS}</style></head><body><h1>Results</h1>"
        f'<p class="status failed" id="status">{esc(message)}</p></body></html>'
    )
