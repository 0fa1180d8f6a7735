"""The run note: the run's results, estimate, cost and verdict, one click from the run's page.

Each task that knows a part pushes it to its own XCom and rewrites the note from every part
known so far (results.set_run_note), so the note grows as the run goes:
- plan_tasks: the estimate (cost_report.ESTIMATE_KEY);
- the aggregate step: the link to the Results view, where the outputs are, the study's summary;
- scale_in: the progress of the fan-out (work items done, failed) and the measured time and
  cost of the cluster;
- finish: the verdict, naming the failed tasks.
Airflow keeps at most 1000 characters of a note: the results line and the verdict are kept
whole, the estimate is shortened first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from windows_batch.cost_report import ESTIMATE_KEY
from windows_batch.results import MAX_NOTE_CHARS, set_run_note

if TYPE_CHECKING:
    from windows_batch.settings import Settings

log = logging.getLogger(__name__)

RESULTS_PART = "note_results"
PROGRESS_PART = "note_progress"
COST_PART = "note_cost"
VERDICT_PART = "note_verdict"


def compose(parts: Mapping[str, str | None]) -> str:
    """The note from its parts, in reading order, within Airflow's limit."""
    ordered = [
        parts.get(RESULTS_PART),
        parts.get(PROGRESS_PART),
        parts.get(VERDICT_PART),
        parts.get(COST_PART),
        parts.get(ESTIMATE_KEY),
    ]
    kept = [p for p in ordered if p]
    note = "\n\n".join(kept)
    while len(note) > MAX_NOTE_CHARS and kept:
        last = kept[-1]
        room = MAX_NOTE_CHARS - (len(note) - len(last)) - 1
        if room > 40:
            kept[-1] = last[:room] + "…"
        else:
            kept.pop()
        note = "\n\n".join(kept)
    return note[:MAX_NOTE_CHARS]


def _pull(ti: Any, task_ids: list[str], key: str) -> str | None:
    for task_id in task_ids:
        value = ti.xcom_pull(task_ids=task_id, key=key)
        if isinstance(value, str) and value:
            return value
    return None


def update(
    settings: Settings,
    context: Mapping[str, Any],
    *,
    aggregate_task_id: str | None,
    part: str | None = None,
    text: str | None = None,
) -> str:
    """Push this task's part (if any) and set the note from every part known so far."""
    ti = context["ti"]
    if part and text:
        ti.xcom_push(key=part, value=text)
    parts: dict[str, str | None] = {
        ESTIMATE_KEY: _pull(ti, ["plan_tasks"], ESTIMATE_KEY),
        RESULTS_PART: _pull(ti, [aggregate_task_id] if aggregate_task_id else [], RESULTS_PART),
        PROGRESS_PART: _pull(ti, ["scale_in"], PROGRESS_PART),
        COST_PART: _pull(ti, ["scale_in"], COST_PART),
        VERDICT_PART: _pull(ti, ["finish"], VERDICT_PART),
    }
    if part and text:
        parts[part] = text
    note = compose(parts)
    if settings.run_note != "off" and note:
        dag_run = context.get("dag_run")
        dag_id = str(getattr(dag_run, "dag_id", "") or ti.dag_id)
        if set_run_note(settings, dag_id=dag_id, run_id=str(ti.run_id), note=note):
            log.info("Run note updated")
    return note
