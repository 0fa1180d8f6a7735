"""The trigger form ("Trigger DAG w/ config") and the checks its JSON schema cannot express.

The form's JSON schema makes the Airflow UI render typed fields and refuse bad input before a
run is created (the REST API answers HTTP 400 "Invalid input for param <field>: ..."). What a
schema cannot say, `validate_study` checks in the run's first task, before anything touches AWS:
more Eb/N0 points than tasks, a misspelt (unknown) field, nested result prefixes. It repeats the
schema's checks too, with plainer messages, so each message names the field it is about.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param

from windows_batch.cost import AUTO
from windows_batch.plan import ALLOCATIONS, SEED_MAX, Study
from windows_batch.settings import RESULTS_PREFIX, Settings

MAX_TASKS = 1024
"""Airflow maps at most `[core] max_map_length` (1024) task instances."""
EBN0_MIN_DB, EBN0_MAX_DB = -10.0, 30.0
MAX_POINTS = 64
MAX_BITS_PER_TASK = 10**12
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 10, 4 * 3600
MAX_TARGET_ERRORS = 10**9

# The common fields have no section: Airflow 3.3's form shows them in its default section
# ("Run Parameters"), the only one open when the form opens; the named sections below start
# collapsed, which suits the details and the advanced settings.
SECTION_PRECISION = "Precision and reproducibility"
SECTION_ADVANCED = "Advanced: cluster, timeouts and where results go"

# S3's rules: 3-63 characters; lowercase letters, digits, dots, hyphens; starts and ends with a
# letter or digit; no "..", not an IP address; reserved prefixes and suffixes.
BUCKET_PATTERN = (
    r"^(?!xn--|sthree-|amzn-s3-demo-)(?!.*\.\.)(?!\d{1,3}(\.\d{1,3}){3}$)"
    r"(?!.*(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
)
# A key prefix: '/'-separated parts of S3's safe characters, no leading, trailing or double '/'.
PREFIX_PATTERN = r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$"
_BUCKET_RE = re.compile(BUCKET_PATTERN)
_PREFIX_RE = re.compile(PREFIX_PATTERN)

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
    "scale_out_timeout_s": 1800,
    "scale_in_timeout_s": 1200,
}


# The whole-number fields whose bounds do not depend on the deployment: the form's schema and
# validate_study both read them here. (cluster_size's maximum is a deployment setting.)
WHOLE_BOUNDS: dict[str, tuple[int, int]] = {
    "num_tasks": (1, MAX_TASKS),
    "max_bits_per_task": (1000, MAX_BITS_PER_TASK),
    "target_errors": (0, MAX_TARGET_ERRORS),
    "seed": (0, SEED_MAX),
    "scale_out_timeout_s": (MIN_TIMEOUT_S, MAX_TIMEOUT_S),
    "scale_in_timeout_s": (MIN_TIMEOUT_S, MAX_TIMEOUT_S),
}


def whole_range(low: int, high: int) -> dict[str, Any]:
    """JSON schema of a whole number in [low, high], with exclusive bounds.

    Airflow 3.3's form clamps a number input to the schema's `minimum`/`maximum` when the field
    loses focus: -5 tasks would silently become 1 and start a run. The same bounds written as
    `exclusiveMinimum`/`exclusiveMaximum` are not clamped, so the server refuses the value with
    a message that names the field ("Invalid input for param num_tasks: ...").
    """
    return {"type": "integer", "exclusiveMinimum": low - 1, "exclusiveMaximum": high + 1}


def cluster_size_schema(settings: Settings) -> dict[str, Any]:
    """JSON schema of cluster_size: "auto" or a whole number from 1 to the group's maximum.

    A list of choices renders as a drop-down in Airflow 3.3's form, which submits the chosen
    entry with its JSON type (the number 4, the string "auto"); a number input could not take
    "auto", and a free-text field of two types would be a six-line text box.
    """
    choices: list[Any] = [AUTO, *range(1, settings.max_cluster_size + 1)]
    return {
        "type": ["string", "integer"],
        "enum": choices,
        "values_display": {
            AUTO: f"auto (cheapest within {settings.cost.auto_slowdown:g}x of the fastest)",
            **{
                str(n): f"{n} ({n * settings.slots_per_instance} tasks at a time)"
                for n in choices[1:]
            },
        },
    }


class StudyError(ValueError):
    """Invalid trigger input; the message starts with the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def form(settings: Settings) -> dict[str, Param]:
    """The DAG's params, in the order the form shows them (common fields first)."""
    return {
        "s3_bucket": Param(
            settings.s3_bucket,
            type="string",
            minLength=3,
            maxLength=63,
            pattern=BUCKET_PATTERN,
            title="S3 bucket for the results",
            description=(
                "Name of the S3 bucket the results are written to, e.g. my-ber-results. "
                "3 to 63 characters: lowercase letters, digits, dots and hyphens, starting "
                "and ending with a letter or digit."
                + (
                    " (Local runs: a folder under .local/buckets.)"
                    if settings.backend == "local"
                    else ""
                )
            ),
        ),
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
        "cluster_size": Param(
            AUTO,
            **cluster_size_schema(settings),
            title="Cluster size (instances)",
            description=(
                f"Windows instances started for this run: auto, or 1 to "
                f"{settings.max_cluster_size}; each runs {settings.slots_per_instance} tasks at "
                f"a time. auto takes the size with the lowest estimated cost among those "
                f"finishing within {settings.cost.auto_slowdown:g}x the fastest size's time "
                "(plan_tasks logs the estimate). They are stopped again at the end, whatever "
                "happened."
            ),
            section=SECTION_ADVANCED,
        ),
        "scale_out_timeout_s": Param(
            DEFAULTS["scale_out_timeout_s"],
            **whole_range(*WHOLE_BOUNDS["scale_out_timeout_s"]),
            title="Start-up timeout (seconds)",
            description=(
                "How long to wait for the instances to be ready before the run fails. Windows "
                "instances usually need 5 to 10 minutes."
            ),
            section=SECTION_ADVANCED,
        ),
        "scale_in_timeout_s": Param(
            DEFAULTS["scale_in_timeout_s"],
            **whole_range(*WHOLE_BOUNDS["scale_in_timeout_s"]),
            title="Shut-down timeout (seconds)",
            description="How long to wait for the instances to be gone at the end.",
            section=SECTION_ADVANCED,
        ),
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


PARAM_NAMES = (
    "s3_bucket",
    "num_tasks",
    "ebn0_db",
    "max_bits_per_task",
    "target_errors",
    "allocation",
    "seed",
    "cluster_size",
    "scale_out_timeout_s",
    "scale_in_timeout_s",
    "s3_prefix_task_results",
    "s3_prefix_aggregate_results",
)


def _whole(params: Mapping[str, Any], field: str, low: int, high: int) -> int:
    value = params.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StudyError(field, f"{value!r} is not a whole number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise StudyError(field, f"{value!r} is not a whole number")
    number = int(value)
    if number < low:
        if number < 0 <= low:
            raise StudyError(field, f"{number} is negative; it must be at least {low}")
        raise StudyError(field, f"{number} is too small; it must be at least {low}")
    if number > high:
        raise StudyError(field, f"{number} is too large; it must be at most {high}")
    return number


def check_bucket(name: object, field: str = "s3_bucket") -> str:
    """Return the bucket name, or raise StudyError saying which S3 rule it breaks."""
    if not isinstance(name, str) or not name:
        raise StudyError(field, "is empty; enter the name of an S3 bucket")
    if not 3 <= len(name) <= 63:
        raise StudyError(field, f"{name!r} has {len(name)} characters; S3 needs 3 to 63")
    if name != name.lower():
        raise StudyError(field, f"{name!r} has uppercase letters; S3 bucket names are lowercase")
    if not _BUCKET_RE.match(name):
        raise StudyError(
            field,
            f"{name!r} is not a valid S3 bucket name: use lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit (no '..', not an IP address)",
        )
    return name


def _prefix(params: Mapping[str, Any], field: str) -> str:
    value = params.get(field)
    if not isinstance(value, str) or not _PREFIX_RE.match(value):
        raise StudyError(
            field,
            f"{value!r} is not a usable key prefix: use parts such as sim/task_results made of "
            "letters, digits and !_.*'()- separated by single '/', without a leading or "
            "trailing '/'",
        )
    return value


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


def _check_results_location(
    bucket: str, task_prefix: str, aggregate_prefix: str, results_bucket: str
) -> None:
    """Refuse what the ECS task role could not write, before anything starts on AWS."""
    if bucket != results_bucket:
        raise StudyError(
            "s3_bucket",
            f"{bucket!r} is not this deployment's results bucket; the ECS tasks may write only "
            f"to {results_bucket!r} (leave the field at its default)",
        )
    for field, prefix in (
        ("s3_prefix_task_results", task_prefix),
        ("s3_prefix_aggregate_results", aggregate_prefix),
    ):
        if prefix != RESULTS_PREFIX and not prefix.startswith(RESULTS_PREFIX + "/"):
            raise StudyError(
                field,
                f"{prefix!r} is outside {RESULTS_PREFIX}/; the ECS tasks may write only under "
                f"{RESULTS_PREFIX}/ in {results_bucket!r} (e.g. {RESULTS_PREFIX}/my_results)",
            )


def validate_study(
    params: Mapping[str, Any],
    *,
    conf: Mapping[str, Any] | None = None,
    max_cluster_size: int = 1000,
    results_bucket_only: str | None = None,
) -> tuple[Study, int | str]:
    """Check the trigger input; return the Study and the cluster size (or "auto"), or raise.

    params: the run's params (form defaults merged with the trigger's conf);
    conf: the trigger's conf as given, checked for unknown (misspelt) fields;
    results_bucket_only: the one bucket the tasks' role may write (Settings.results_bucket_only),
    whose RESULTS_PREFIX the prefixes must stay under; None: any bucket and prefix.
    """
    unknown = sorted(set(conf or {}) - set(PARAM_NAMES))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, PARAM_NAMES, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise StudyError(
            unknown[0],
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; the form's "
            f"fields are {', '.join(PARAM_NAMES)}",
        )
    bucket = check_bucket(params.get("s3_bucket"))
    num_tasks = _whole(params, "num_tasks", *WHOLE_BOUNDS["num_tasks"])

    ebn0 = _points(params.get("ebn0_db"), num_tasks)
    max_bits = _whole(params, "max_bits_per_task", *WHOLE_BOUNDS["max_bits_per_task"])
    target = _whole(params, "target_errors", *WHOLE_BOUNDS["target_errors"])
    allocation = params.get("allocation")
    if allocation not in ALLOCATIONS:
        raise StudyError(
            "allocation", f"{allocation!r} is not one of {', '.join(repr(a) for a in ALLOCATIONS)}"
        )
    seed = _whole(params, "seed", *WHOLE_BOUNDS["seed"])
    cluster_size: int | str = AUTO
    if params.get("cluster_size") != AUTO:
        if isinstance(params.get("cluster_size"), str):
            raise StudyError(
                "cluster_size", f"{params['cluster_size']!r}: use auto or a whole number"
            )
        cluster_size = _whole(params, "cluster_size", 1, max_cluster_size)
    for field in ("scale_out_timeout_s", "scale_in_timeout_s"):
        _whole(params, field, *WHOLE_BOUNDS[field])
    task_prefix = _prefix(params, "s3_prefix_task_results")
    aggregate_prefix = _prefix(params, "s3_prefix_aggregate_results")
    a, b = task_prefix + "/", aggregate_prefix + "/"
    if a.startswith(b) or b.startswith(a):
        raise StudyError(
            "s3_prefix_aggregate_results",
            f"{aggregate_prefix!r} overlaps s3_prefix_task_results {task_prefix!r}; the "
            "aggregate would read its own outputs as task results: use separate folders",
        )
    if results_bucket_only is not None:
        _check_results_location(bucket, task_prefix, aggregate_prefix, results_bucket_only)
    study = Study(
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
    return study, cluster_size
