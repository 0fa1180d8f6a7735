"""The BER study: a GNU Octave Monte Carlo of BPSK over AWGN, bit-error rate vs Eb/N0.

A Python study (its adaptive planner needs code): `load` gives the engine its form, its plan
(one `python -m bersim simulate ...` per task, then `python -m bersim aggregate ...`), what its
exit codes mean and a one-line summary of results.json. Its image is docker/bersim/.

Its tasks' expected time is the planner's expected bits over the rate of one task on a shared
instance (BITS_PER_S; `make bench` measures the kernel), which the engine uses for the estimate,
`cluster_size: auto` and the deadline check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from windows_batch import capacity
from windows_batch.study import Item, Plan, RunContext, StepSpec

from . import form as ber_form
from .plan import PROGRAM, plan_study

if TYPE_CHECKING:
    from airflow.sdk import Param

    from windows_batch.catalog import StudyInfo
    from windows_batch.settings import Settings

BITS_PER_S = 4e7
"""Simulated bits per second of one task (one slot) on a shared c5.xlarge: the kernel alone
runs 6.2e7 bit/s per core here (`make bench`); override with BERSIM_BITS_PER_S."""
EXIT_MEANING = {
    1: "runtime failure",
    2: "bad input; a retry would not help",
    3: "task results missing; outputs written without them",
}
PUBLISHED = ("results.png", "results.csv", "results.json")


def bits_per_s() -> float:
    raw = os.environ.get("BERSIM_BITS_PER_S", "").strip()
    return float(raw) if raw else BITS_PER_S


@dataclass
class BerStudy:
    """The Study interface for the BER study (windows_batch/study.py)."""

    info: StudyInfo
    title: str = "Windows batch compute: BER study"
    doc_md: str = __doc__ or ""
    sweep_task_id: str = "simulate"
    aggregate_task_id: str | None = "aggregate"

    def slots(self, settings: Settings) -> int:
        return capacity.slots_for(settings, cpu=self.info.cpu, memory_mib=self.info.memory_mib)

    def form(self, settings: Settings) -> dict[str, Param]:
        return ber_form.form(settings, slots=self.slots(settings))

    def exit_meaning(self, code: int) -> str:
        return EXIT_MEANING.get(code, "failed")

    def plan(
        self,
        params: Mapping[str, Any],
        *,
        conf: Mapping[str, Any] | None,
        context: RunContext,
        settings: Settings,
    ) -> Plan:
        inputs = ber_form.validate(
            params,
            bucket=context.bucket,
            results_prefix=context.results_prefix,
            local=context.local,
        )
        planned = plan_study(inputs, context.run_id)
        rate = bits_per_s()
        items = [
            Item(
                index=task.index,
                argv=tuple(task.argv),
                expected_s=bits / rate,
                label=f"Eb/N0 {task.ebn0_db:g} dB, up to {task.max_bits:.3g} bits",
            )
            for task, bits in zip(planned.tasks, planned.expected_task_bits, strict=True)
        ]
        aggregate = Item(
            index=0,
            argv=(*PROGRAM, *planned.aggregate_command),
            expected_s=60.0,
            label=f"aggregate {len(items)} task results",
        )
        summary = (
            f"{len(items)} tasks over {len(inputs.ebn0_db)} Eb/N0 points "
            f"({inputs.allocation} allocation), about {planned.expected_bits:.3g} bits; "
            f"results under {planned.output_prefix_uri}"
        )
        return Plan(
            sweep=StepSpec(task_id=self.sweep_task_id),
            items=items,
            outputs_uri=planned.output_prefix_uri,
            progress_uri=planned.input_prefix_uri,
            summary=summary,
            values=dict(params),
            aggregate_step=StepSpec(task_id=str(self.aggregate_task_id)),
            aggregate=aggregate,
            time_field="max_bits_per_task",
            published=PUBLISHED,
        )

    def summarize(self, read: Callable[[str], bytes | None]) -> str | None:
        data = read("results.json")
        if data is None:
            return None
        document = json.loads(data)
        return summary_line(document) if isinstance(document, dict) else None


def summary_line(document: Mapping[str, Any]) -> str:
    """One line from results.json: points, bits, errors at the worst point, missing tasks."""
    rows = [row for row in document.get("rows") or [] if isinstance(row, dict)]
    bits = int(document.get("bits") or 0)
    if not rows:
        return "no results"
    worst = min(rows, key=lambda row: (int(row.get("errors", 0)), -float(row.get("ebn0_db", 0))))
    errors = int(worst.get("errors", 0))
    line = (
        f"{len(rows)} Eb/N0 points, {bits:.3g} bits simulated, worst point "
        f"{float(worst.get('ebn0_db', 0)):g} dB: {errors} error{'' if errors == 1 else 's'} "
        f"(BER {float(worst.get('ber', 0)):.2e})"
    )
    missing = document.get("missing_tasks") or []
    if missing:
        expected = document.get("expected_tasks")
        line += f"; {len(missing)} of {expected} task results MISSING"
    return line


def load(info: StudyInfo, settings: Settings) -> BerStudy:
    """The engine's entry point (windows_batch/python_study.py)."""
    del settings
    return BerStudy(info=info)
