"""The engine's own fields of every study's trigger form, and the checks they share.

The form's JSON schema makes the Airflow UI render typed fields and refuse bad input before a
run is created (the REST API answers HTTP 400 "Invalid input for param <field>: ..."). What a
schema cannot say, plan_tasks checks before anything touches AWS, with messages that name the
field: unknown (misspelt) fields, the results bucket, a failure budget.

A study's own fields must not take an engine field's name (`ENGINE_FIELDS`).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from windows_batch.catalog import CatalogError, FailureBudget, parse_budget
from windows_batch.cost_settings import AUTO
from windows_batch.study import StudyError

if TYPE_CHECKING:
    from airflow.sdk import Param

    from windows_batch.settings import Settings

MIN_TIMEOUT_S, MAX_TIMEOUT_S = 10, 4 * 3600
DEFAULT_SCALE_OUT_TIMEOUT_S = 1800
DEFAULT_SCALE_IN_TIMEOUT_S = 1200
ENGINE_FIELDS = (
    "s3_bucket",
    "cluster_size",
    "scale_out_timeout_s",
    "scale_in_timeout_s",
    "max_failed_tasks",
)
# Airflow 3.3's form opens its default section ("Run Parameters") only; named sections start
# collapsed, which suits the engine's advanced settings.
SECTION_ADVANCED = "Advanced: cluster, timeouts and where results go"

# S3's rules: 3-63 characters; lowercase letters, digits, dots, hyphens; starts and ends with a
# letter or digit; no "..", not an IP address; reserved prefixes and suffixes.
BUCKET_PATTERN = (
    r"^(?!xn--|sthree-|amzn-s3-demo-)(?!.*\.\.)(?!\d{1,3}(\.\d{1,3}){3}$)"
    r"(?!.*(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
)
# A key prefix: '/'-separated parts of S3's safe characters, no leading, trailing or double '/',
# and no part that is only dots ('.' and '..' would climb out of the prefix on a file system).
PREFIX_PATTERN = r"^(?!\.\.?(/|$))(?!.*/\.\.?(/|$))[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$"
BUDGET_PATTERN = r"^\s*$|^\s*\d+\s*$|^\s*\d+(\.\d+)?\s*%\s*$"
_BUCKET_RE = re.compile(BUCKET_PATTERN)
_PREFIX_RE = re.compile(PREFIX_PATTERN)


def whole_range(low: int, high: int) -> dict[str, Any]:
    """JSON schema of a whole number in [low, high], with exclusive bounds.

    Airflow 3.3's form clamps a number input to the schema's `minimum`/`maximum` when the field
    loses focus: -5 tasks would silently become 1 and start a run. The same bounds written as
    `exclusiveMinimum`/`exclusiveMaximum` are not clamped, so the server refuses the value with
    a message that names the field ("Invalid input for param num_tasks: ...").
    """
    return {"type": "integer", "exclusiveMinimum": low - 1, "exclusiveMaximum": high + 1}


def cluster_size_schema(settings: Settings, *, slots: int) -> dict[str, Any]:
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
            **{str(n): f"{n} ({n * slots} tasks at a time)" for n in choices[1:]},
        },
    }


def engine_fields(
    settings: Settings,
    *,
    slots: int,
    include: Iterable[str] = ENGINE_FIELDS,
    budget_default: str = "",
) -> dict[str, Param]:
    """The engine's form fields a study shows, in the form's order (bucket first, the rest in
    the advanced section). slots: tasks of this study one instance runs at once."""
    from airflow.sdk import Param  # noqa: PLC0415

    wanted = set(include)
    fields: dict[str, Param] = {}
    if "s3_bucket" in wanted:
        fields["s3_bucket"] = Param(
            settings.s3_bucket,
            type="string",
            minLength=3,
            maxLength=63,
            pattern=BUCKET_PATTERN,
            title="S3 bucket for the results",
            description=(
                "Name of the S3 bucket the results are written to, e.g. my-results. "
                "3 to 63 characters: lowercase letters, digits, dots and hyphens, starting "
                "and ending with a letter or digit."
                + (" (Local runs: a folder under .local/buckets.)" if settings.local else "")
            ),
        )
    if "cluster_size" in wanted:
        fields["cluster_size"] = Param(
            AUTO,
            **cluster_size_schema(settings, slots=slots),
            title="Cluster size (instances)",
            description=(
                f"Windows instances started for this run: auto, or 1 to "
                f"{settings.max_cluster_size}; each runs {slots} tasks at a time. auto takes "
                f"the size with the lowest estimated cost among those finishing within "
                f"{settings.cost.auto_slowdown:g}x the fastest size's time (plan_tasks logs "
                "the estimate). They are stopped again at the end, whatever happened."
            ),
            section=SECTION_ADVANCED,
        )
    if "scale_out_timeout_s" in wanted:
        fields["scale_out_timeout_s"] = Param(
            DEFAULT_SCALE_OUT_TIMEOUT_S,
            **whole_range(MIN_TIMEOUT_S, MAX_TIMEOUT_S),
            title="Start-up timeout (seconds)",
            description=(
                "How long to wait for the instances to be ready before the run fails. Windows "
                "instances usually need 5 to 10 minutes."
            ),
            section=SECTION_ADVANCED,
        )
    if "scale_in_timeout_s" in wanted:
        fields["scale_in_timeout_s"] = Param(
            DEFAULT_SCALE_IN_TIMEOUT_S,
            **whole_range(MIN_TIMEOUT_S, MAX_TIMEOUT_S),
            title="Shut-down timeout (seconds)",
            description="How long to wait for the instances to be gone at the end.",
            section=SECTION_ADVANCED,
        )
    if "max_failed_tasks" in wanted:
        fields["max_failed_tasks"] = Param(
            budget_default,
            # Airflow's form sends an empty field as null: the budget is optional.
            type=["string", "null"],
            maxLength=12,
            pattern=BUDGET_PATTERN,
            title="Failed tasks the run may go on past",
            description=(
                "Empty: every task runs, and any failed task fails the run. A number (3) or a "
                "percentage (5%): the run goes on past that many failed tasks and is green if "
                "no more failed; one more stops the tasks not started yet, and the run fails. "
                "The aggregate step sees what exists; the verdict names the failed tasks."
            ),
            section=SECTION_ADVANCED,
        )
    return fields


@dataclass(frozen=True)
class EngineValues:
    """The engine's fields of one run's form, checked."""

    bucket: str
    cluster_size: int | str
    scale_out_timeout_s: int
    scale_in_timeout_s: int
    budget: FailureBudget | None


def whole(params: Mapping[str, Any], field: str, low: int, high: int) -> int:
    """params[field] as a whole number in [low, high], or StudyError naming the field."""
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


def check_prefix(value: object, field: str) -> str:
    """A key prefix such as sim/task_results, or StudyError naming the field (dot parts too)."""
    if isinstance(value, str) and any(part in {".", ".."} for part in value.split("/")):
        raise StudyError(
            field,
            f"{value!r} has a '.' or '..' part; a key prefix names folders, it cannot climb "
            "out of one",
        )
    if not isinstance(value, str) or not _PREFIX_RE.match(value):
        raise StudyError(
            field,
            f"{value!r} is not a usable key prefix: use parts such as sim/task_results made of "
            "letters, digits and !_.*'()- separated by single '/', without a leading or "
            "trailing '/'",
        )
    return value


def check_unknown(conf: Mapping[str, Any] | None, names: Iterable[str]) -> None:
    """Refuse trigger fields the form does not have, with a did-you-mean."""
    known = list(names)
    unknown = sorted(set(conf or {}) - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise StudyError(
        unknown[0],
        f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; the form's "
        f"fields are {', '.join(known)}",
    )


def check_engine_values(
    params: Mapping[str, Any], *, settings: Settings, names: Iterable[str]
) -> EngineValues:
    """Check the engine's fields a form has (the others take their defaults)."""
    shown = set(names)
    bucket = settings.s3_bucket
    if "s3_bucket" in shown:
        bucket = check_bucket(params.get("s3_bucket"))
    if settings.results_bucket_only is not None and bucket != settings.results_bucket_only:
        raise StudyError(
            "s3_bucket",
            f"{bucket!r} is not this deployment's results bucket; the ECS tasks may write only "
            f"to {settings.results_bucket_only!r} (leave the field at its default)",
        )
    if not bucket:
        raise StudyError("s3_bucket", "no results bucket is configured (setting S3_BUCKET)")
    cluster_size: int | str = AUTO
    raw_size = params.get("cluster_size", AUTO) if "cluster_size" in shown else AUTO
    if raw_size != AUTO:
        if isinstance(raw_size, str):
            raise StudyError("cluster_size", f"{raw_size!r}: use auto or a whole number")
        cluster_size = whole(params, "cluster_size", 1, settings.max_cluster_size)
    timeouts = {}
    for field, default in (
        ("scale_out_timeout_s", DEFAULT_SCALE_OUT_TIMEOUT_S),
        ("scale_in_timeout_s", DEFAULT_SCALE_IN_TIMEOUT_S),
    ):
        timeouts[field] = (
            whole(params, field, MIN_TIMEOUT_S, MAX_TIMEOUT_S) if field in shown else default
        )
    budget = None
    if "max_failed_tasks" in shown:
        try:
            budget = parse_budget(params.get("max_failed_tasks"), where="max_failed_tasks")
        except CatalogError as exc:
            raise StudyError("max_failed_tasks", str(exc).split(": ", 1)[-1]) from None
    return EngineValues(
        bucket=bucket,
        cluster_size=cluster_size,
        scale_out_timeout_s=timeouts["scale_out_timeout_s"],
        scale_in_timeout_s=timeouts["scale_in_timeout_s"],
        budget=budget,
    )


def check_run_id(run_id: str) -> str:
    """A run id the engine can use as a key part: no '.' or '..' (Airflow allows both)."""
    if run_id in {".", ".."} or "/" in run_id or not run_id:
        raise StudyError("run_id", f"{run_id!r} cannot name a folder of results; trigger a new run")
    return run_id
