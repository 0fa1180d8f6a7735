"""The BER study's trigger form, and the checks its JSON schema cannot express.

The study's own fields (tasks, Eb/N0 points, bits, errors, allocation, seed, result folders)
sit among the engine's (bucket, cluster size, timeouts: windows_batch.engine_form), in the
order the form has always had. What a schema cannot say, `validate` checks in plan_tasks,
before anything touches AWS: more Eb/N0 points than tasks, nested result prefixes, prefixes
outside the study's own. Each message names its field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from windows_batch.engine_form import (
    PREFIX_PATTERN,
    SECTION_ADVANCED,
    check_prefix,
    engine_fields,
    whole,
    whole_range,
)
from windows_batch.study import StudyError

from .plan import ALLOCATIONS, SEED_MAX, Inputs

if TYPE_CHECKING:
    from airflow.sdk import Param

    from windows_batch.settings import Settings

MAX_TASKS = 10_000
"""More tasks than Airflow maps (`[core] max_map_length`) run in chunks of several tasks."""
EBN0_MIN_DB, EBN0_MAX_DB = -10.0, 30.0
MAX_POINTS = 64
MAX_BITS_PER_TASK = 10**12
MAX_TARGET_ERRORS = 10**9

# The common fields have no section: Airflow 3.3's form shows them in its default section
# ("Run Parameters"), the only one open when the form opens; the named sections below start
# collapsed, which suits the details and the advanced settings.
SECTION_PRECISION = "Precision and reproducibility"

DEFAULT_EBN0_DB = [0, 2, 4, 6, 8, 10, 11, 12]
DEFAULTS: dict[str, Any] = {
    "num_tasks": 200,
    "ebn0_db": DEFAULT_EBN0_DB,
    "max_bits_per_task": 4_000_000_000,
    "target_errors": 1000,
    "allocation": "adaptive",
    "seed": 1,
    "s3_prefix_task_results": "sim/task_results",
    "s3_prefix_aggregate_results": "sim/aggregate_results",
}

# The whole-number fields whose bounds do not depend on the deployment: the form's schema and
# `validate` both read them here.
WHOLE_BOUNDS: dict[str, tuple[int, int]] = {
    "num_tasks": (1, MAX_TASKS),
    "max_bits_per_task": (1000, MAX_BITS_PER_TASK),
    "target_errors": (0, MAX_TARGET_ERRORS),
    "seed": (0, SEED_MAX),
}
ENGINE_SHOWN = ("s3_bucket", "cluster_size", "scale_out_timeout_s", "scale_in_timeout_s")


def form(settings: Settings, *, slots: int) -> dict[str, Param]:
    """The DAG's params, in the order the form shows them (common fields first)."""
    from airflow.sdk import Param  # noqa: PLC0415

    engine = engine_fields(settings, slots=slots, include=ENGINE_SHOWN)
    study: dict[str, Param] = {
        "num_tasks": Param(
            DEFAULTS["num_tasks"],
            **whole_range(*WHOLE_BOUNDS["num_tasks"]),
            title="Number of tasks",
            description=(
                "How many simulation tasks to run in parallel on the cluster (1 to "
                f"{MAX_TASKS}). At least one per Eb/N0 point."
            ),
        ),
        "ebn0_db": Param(
            DEFAULTS["ebn0_db"],
            type="array",
            items={"type": "number", "minimum": EBN0_MIN_DB, "maximum": EBN0_MAX_DB},
            minItems=1,
            maxItems=MAX_POINTS,
            uniqueItems=True,
            title="Eb/N0 points (dB)",
            description=(
                "Signal-to-noise ratios to simulate, in dB, as a list such as "
                "[0, 2, 4, 6, 8, 10, 11, 12]. Each between -10 and 30, no repeats. Higher "
                "values have fewer bit errors and need many more simulated bits."
            ),
        ),
        "max_bits_per_task": Param(
            DEFAULTS["max_bits_per_task"],
            **whole_range(*WHOLE_BOUNDS["max_bits_per_task"]),
            title="Bits per task (at most)",
            description=(
                "The most bits one task simulates; this bounds how long a task runs (about "
                "50 million bits per second per task). A task may stop earlier, see "
                "'Errors to count per point'."
            ),
            section=SECTION_PRECISION,
        ),
        "target_errors": Param(
            DEFAULTS["target_errors"],
            **whole_range(*WHOLE_BOUNDS["target_errors"]),
            title="Errors to count per point",
            description=(
                "A point stops once its tasks have counted this many bit errors: about 100 "
                "errors give the BER within +/-20 %, 1000 within +/-6 %. 0 = never stop early "
                "(every task simulates all its bits)."
            ),
            section=SECTION_PRECISION,
        ),
        "allocation": Param(
            DEFAULTS["allocation"],
            type="string",
            enum=list(ALLOCATIONS),
            values_display={
                "adaptive": "Adaptive: more tasks where errors are rare (recommended)",
                "equal": "Equal: the same number of tasks and bits for every point",
            },
            title="How tasks are shared among the points",
            description=(
                "Adaptive gives most tasks to the high Eb/N0 points, where errors are rare, "
                "and lets easy points stop early: the same precision for far fewer bits. "
                "Equal splits tasks evenly, as in the original design."
            ),
            section=SECTION_PRECISION,
        ),
        "seed": Param(
            DEFAULTS["seed"],
            **whole_range(*WHOLE_BOUNDS["seed"]),
            title="Random seed",
            description=(
                "The same seed with the same settings reproduces exactly the same counts; "
                "change it for an independent repetition."
            ),
            section=SECTION_PRECISION,
        ),
    }
    prefixes: dict[str, Param] = {
        "s3_prefix_task_results": Param(
            DEFAULTS["s3_prefix_task_results"],
            type="string",
            minLength=1,
            maxLength=200,
            pattern=PREFIX_PATTERN,
            title="Folder for the per-task results",
            description=(
                "Key prefix in the bucket, e.g. sim/task_results; each run writes under "
                "<prefix>/<run id>/, so runs never overwrite each other."
            ),
            section=SECTION_ADVANCED,
        ),
        "s3_prefix_aggregate_results": Param(
            DEFAULTS["s3_prefix_aggregate_results"],
            type="string",
            minLength=1,
            maxLength=200,
            pattern=PREFIX_PATTERN,
            title="Folder for the table and plot",
            description=(
                "Key prefix for results.csv, results.json and results.png, e.g. "
                "sim/aggregate_results (under <prefix>/<run id>/). Must not overlap the "
                "per-task folder."
            ),
            section=SECTION_ADVANCED,
        ),
    }
    return {
        "s3_bucket": engine["s3_bucket"],
        **study,
        **{k: engine[k] for k in ENGINE_SHOWN[1:]},
        **prefixes,
    }


def _points(points: object, num_tasks: int) -> list[float]:
    """The Eb/N0 list: numbers in range, no repeats, no more points than tasks."""
    if not isinstance(points, (list, tuple)):
        raise StudyError("ebn0_db", f"{points!r} is not a list of numbers such as [0, 2, 4]")
    if not points:
        raise StudyError("ebn0_db", "the list is empty; give at least one Eb/N0 value in dB")
    if len(points) > MAX_POINTS:
        raise StudyError("ebn0_db", f"{len(points)} points; at most {MAX_POINTS}")
    ebn0: list[float] = []
    for position, value in enumerate(points, start=1):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StudyError("ebn0_db", f"entry {position} ({value!r}) is not a number")
        if not (math.isfinite(value) and EBN0_MIN_DB <= value <= EBN0_MAX_DB):
            raise StudyError(
                "ebn0_db",
                f"entry {position} ({value!r}) is outside {EBN0_MIN_DB:g} to {EBN0_MAX_DB:g} dB",
            )
        if float(value) in ebn0:
            raise StudyError("ebn0_db", f"entry {position} ({value!r}) appears twice")
        ebn0.append(float(value))
    if len(ebn0) > num_tasks:
        raise StudyError(
            "ebn0_db",
            f"{len(ebn0)} Eb/N0 points need at least {len(ebn0)} tasks, but num_tasks is "
            f"{num_tasks}: add tasks or remove points",
        )
    return ebn0


def _check_own_prefix(field: str, prefix: str, own: str, bucket: str) -> None:
    """On AWS the study's task role writes only under its own prefix."""
    if prefix != own and not prefix.startswith(own + "/"):
        raise StudyError(
            field,
            f"{prefix!r} is outside {own}/; the ECS tasks may write only under {own}/ in "
            f"{bucket!r} (e.g. {own}/my_results)",
        )


def validate(params: Mapping[str, Any], *, bucket: str, results_prefix: str, local: bool) -> Inputs:
    """Check the study's own fields; return the planner's inputs, or raise StudyError.

    bucket: the run's bucket (the engine checked it); results_prefix: the study's own prefix,
    which on AWS (local=False) both result folders must stay under.
    """
    num_tasks = whole(params, "num_tasks", *WHOLE_BOUNDS["num_tasks"])
    ebn0 = _points(params.get("ebn0_db"), num_tasks)
    max_bits = whole(params, "max_bits_per_task", *WHOLE_BOUNDS["max_bits_per_task"])
    target = whole(params, "target_errors", *WHOLE_BOUNDS["target_errors"])
    allocation = params.get("allocation")
    if allocation not in ALLOCATIONS:
        raise StudyError(
            "allocation", f"{allocation!r} is not one of {', '.join(repr(a) for a in ALLOCATIONS)}"
        )
    seed = whole(params, "seed", *WHOLE_BOUNDS["seed"])
    task_prefix = check_prefix(params.get("s3_prefix_task_results"), "s3_prefix_task_results")
    aggregate_prefix = check_prefix(
        params.get("s3_prefix_aggregate_results"), "s3_prefix_aggregate_results"
    )
    a, b = task_prefix + "/", aggregate_prefix + "/"
    if a.startswith(b) or b.startswith(a):
        raise StudyError(
            "s3_prefix_aggregate_results",
            f"{aggregate_prefix!r} overlaps s3_prefix_task_results {task_prefix!r}; the "
            "aggregate would read its own outputs as task results: use separate folders",
        )
    for field, prefix in (
        ("s3_prefix_task_results", task_prefix),
        ("s3_prefix_aggregate_results", aggregate_prefix),
    ):
        if "_engine" in prefix.split("/"):
            raise StudyError(field, f"{prefix!r}: '_engine' folders are the engine's own")
        if not local:
            _check_own_prefix(field, prefix, results_prefix, bucket)
    return Inputs(
        s3_bucket=bucket,
        num_tasks=num_tasks,
        ebn0_db=tuple(ebn0),
        max_bits_per_task=max_bits,
        target_errors=target,
        allocation=str(allocation),
        seed=seed,
        s3_prefix_task_results=task_prefix,
        s3_prefix_aggregate_results=aggregate_prefix,
    )
