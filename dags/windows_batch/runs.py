"""One run of a study: where its files are, and the policies every fan-out task applies.

Everything here is recomputed from the run's validated form (`dag_run.conf` with the form's
defaults) and the deployment's settings, never read back from XCom: a user who may edit XCom
must not be able to point a task or the Results view at other objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from windows_batch.engine_form import check_bucket, check_run_id
from windows_batch.study import RunContext, StudyError, failure_budget

if TYPE_CHECKING:
    from windows_batch.catalog import FailureBudget, StudyInfo
    from windows_batch.settings import Settings

RUNNER_FINAL_EXITS = (64, 65)
"""The task runner's own final exit codes: a bad manifest, a chunk not the one planned."""
RUNNER_EXIT_MEANING = {
    64: "the task runner refused its manifest or arguments",
    65: "the chunk is not the one plan_tasks planned",
    74: "the task runner could not read or write the run's objects",
    124: "the command outran its timeout",
    126: "the command could not be started",
    127: "the command was not found where the task ran",
}
PLAN_TASK_ID = "plan_tasks"
RESULTS_KEY = "results_location"
"""plan_tasks' XCom for the Results view: validated there against the study's own prefix."""


def context_for(
    info: StudyInfo, settings: Settings, params: Mapping[str, Any], run_id: str
) -> RunContext:
    """The run's context from its form: the bucket (the deployment's on AWS), the study's
    prefix and the run id."""
    bucket = settings.s3_bucket
    if "s3_bucket" in params and params.get("s3_bucket"):
        bucket = check_bucket(params.get("s3_bucket"))
    if settings.results_bucket_only is not None:
        bucket = settings.results_bucket_only
    if not bucket:
        raise StudyError("s3_bucket", "no results bucket is configured (setting S3_BUCKET)")
    return RunContext(
        run_id=check_run_id(run_id),
        bucket=bucket,
        results_prefix=info.results_prefix,
        local=settings.local,
    )


def params_of(context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's form values (Airflow merges the trigger's conf into the form's defaults)."""
    params = context.get("params") or {}
    return {key: params[key] for key in params}


def exit_message(code: int | None, *, final_codes: tuple[int, ...], detail: str) -> str:
    """The error message of a fan-out or aggregate try that ended with `code`."""
    if code is None:
        return f"the task failed: {detail}"
    meaning = RUNNER_EXIT_MEANING.get(code)
    if meaning is None:
        meaning = (
            "final: the study says a retry would not help"
            if code in final_codes
            else ("may pass on a retry")
        )
    return f"exited with {code} ({meaning}): {detail}"


def is_final(code: int | None, final_codes: tuple[int, ...]) -> bool:
    return code is not None and (code in final_codes or code in RUNNER_FINAL_EXITS)


def runner_args(
    info: StudyInfo, settings: Settings, params: Mapping[str, Any], run_id: str, chunk: object
) -> list[str]:
    """The task runner's arguments for a chunk (its reference from plan_tasks), or for the
    aggregate step when `chunk` is None: the ECS container command, or `python -m wbrun`'s."""
    manifest_uri = context_for(info, settings, params, run_id).engine_uri + "manifest/"
    if chunk is None:
        return ["aggregate", "--manifest", manifest_uri]
    return ChunkRef.parse(chunk).command(manifest_uri)


def run_budget(
    info: StudyInfo, params: Mapping[str, Any], *, default: FailureBudget | None
) -> FailureBudget | None:
    """The run's failure budget: the form's max_failed_tasks, else study.yaml's (`default` for
    a value plan_tasks would have refused)."""
    try:
        return failure_budget(info, params)
    except ValueError:
        return default


def budget_exhausted(
    ti: Any, *, task_id: str, budget: FailureBudget | None, chunks: int
) -> str | None:
    """Why this chunk must not start: more chunks failed than the run's budget allows."""
    if budget is None:
        return None
    failed = ti.get_ti_count(
        dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id], states=["failed"]
    )
    allowed = budget.allowed(chunks)
    if failed > allowed:
        return (
            f"the run's failure budget is spent: {failed} {task_id} tasks failed, "
            f"max_failed_tasks {budget.text()} allows {allowed} of {chunks}; this task is "
            "not started"
        )
    return None


@dataclass(frozen=True)
class ChunkRef:
    """One fan-out task's input (plan_tasks' XCom, one per chunk): checked before use."""

    chunk: int
    at: str
    sha: str
    items: int

    @classmethod
    def parse(cls, value: object) -> ChunkRef:
        try:
            data = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ValueError(f"not a chunk reference: {value!r}")
        chunk, at, sha = data.get("chunk"), str(data.get("at", "")), str(data.get("sha", ""))
        offset, _, length = at.partition(":")
        if not (
            isinstance(chunk, int)
            and chunk >= 0
            and offset.isdigit()
            and length.isdigit()
            and len(sha) == 64
            and all(c in "0123456789abcdef" for c in sha)
        ):
            raise ValueError(f"not a chunk reference: {value!r}")
        return cls(chunk=chunk, at=at, sha=sha, items=int(data.get("items", 1)))

    def command(self, manifest_uri: str) -> list[str]:
        """The task runner's arguments for this chunk (the ECS container command)."""
        return [
            "run",
            "--manifest",
            manifest_uri,
            "--chunk",
            str(self.chunk),
            "--at",
            self.at,
            "--sha",
            self.sha,
        ]
