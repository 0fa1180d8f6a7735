"""The local backend: the same DAG on one machine, the study's commands as subprocesses here.

Each fan-out task and the aggregate run the task runner exactly as an ECS container would
(`python -m wbrun run --manifest ... --chunk N ...`), with WB_LOCAL_ROOT set: every
`s3://bucket/key` is then the file `<LOCAL_ROOT>/bucket/key` (same key layout as S3), so the
runner stages and publishes into the local bucket. `scale_out` and `scale_in` only log what
they would do on AWS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from windows_batch.publish import PublishMixin
from windows_batch.runs import (
    ChunkRef,
    budget_exhausted,
    exit_message,
    is_final,
    params_of,
    run_budget,
    runner_args,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from windows_batch.catalog import FailureBudget
    from windows_batch.settings import Settings
    from windows_batch.study import Study

_DEADLINE_EXIT = -9


class LocalRunnerOperator(BaseOperator):
    """Run the task runner here for one chunk (or the aggregate), streaming its output.

    study: the study; settings: the deployment settings; chunk: the chunk reference
    (plan_tasks' XCom, mapped), None for the aggregate. Each try ends at TASK_TIMEOUT_S: the
    runner's process group is stopped and the try fails without a retry (a retry would only
    hit the same deadline).
    """

    template_fields = ("chunk",)
    ui_color = "#e8f4e4"

    def __init__(
        self,
        *,
        study: Study,
        settings: Settings,
        chunk: Any = None,
        budget: FailureBudget | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.study = study
        self.settings = settings
        self.chunk = chunk
        self.budget = budget
        self._proc: subprocess.Popen[str] | None = None
        self._last_error = ""

    def runner_args(self, context: Context) -> list[str]:
        return runner_args(
            self.study.info, self.settings, params_of(context), str(context["run_id"]), self.chunk
        )

    def run_runner(self, args: Sequence[str]) -> int:
        argv = [sys.executable, "-m", "wbrun", *args]
        self.log.info("On ECS the container would run: wbrun %s", " ".join(args))
        env = {
            **os.environ,
            "WB_LOCAL_ROOT": str(self.settings.local_root),
            "PYTHONUNBUFFERED": "1",
        }
        proc = self._proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        reached = threading.Event()

        def stop_at_deadline() -> None:
            if proc.poll() is None:
                reached.set()
                self.on_kill()

        # A timer, not a check per output line: a silent runner would never reach the check.
        timer = threading.Timer(self.settings.task_timeout_s, stop_at_deadline)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                self.log.info("%s", line)
                if "error:" in line:
                    self._last_error = line
            code = proc.wait()
        finally:
            timer.cancel()
        return _DEADLINE_EXIT if reached.is_set() else code

    def fail_for(self, code: int) -> None:
        if code == _DEADLINE_EXIT:
            raise AirflowFailException(
                f"this try reached its deadline (TASK_TIMEOUT_S={self.settings.task_timeout_s} "
                "s): stopped; a retry would hit it again"
            )
        finals = self.study.info.final_exit_codes
        message = exit_message(code, final_codes=finals, detail=self._last_error or "see the log")
        if is_final(code, finals):
            raise AirflowFailException(message)
        raise AirflowException(message)

    def execute(self, context: Context) -> Any:
        if self.chunk is not None:
            ref = ChunkRef.parse(self.chunk)
            spent = budget_exhausted(
                context["ti"],
                task_id=self.task_id,
                # The form's budget, not only study.yaml's: the run's own value decides.
                budget=run_budget(self.study.info, params_of(context), default=self.budget),
                chunks=int(context["ti"].xcom_pull(task_ids="plan_tasks", key="chunk_count") or 1),
            )
            if spent:
                raise AirflowSkipException(spent)
            del ref
        code = self.run_runner(self.runner_args(context))
        if code != 0:
            self.fail_for(code)
        return None

    def on_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)


class LocalAggregateOperator(PublishMixin, LocalRunnerOperator):
    """The aggregate step here, then the results link and run note (even when it failed)."""

    def execute(self, context: Context) -> Any:
        code = self.run_runner(self.runner_args(context))
        summary = self.publish(context, partial=code != 0)
        if code != 0:
            self.fail_for(code)
        return summary


class ScaleNoopOperator(BaseOperator):
    """Local stand-in for scaling the cluster: logs what the ECS backend would do."""

    template_fields = ("desired",)
    ui_color = "#f4f4f4"

    def __init__(self, *, desired: str | int, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.desired = desired
        self.settings = settings

    def execute(self, context: Context) -> None:
        self.log.info(
            "Local backend: nothing to scale. On AWS this would set the desired capacity of "
            "Auto Scaling group %r to %s and wait until %s container instance(s) of ECS "
            "cluster %r are %s.",
            self.settings.asg_name,
            self.desired,
            self.desired,
            self.settings.cluster_name,
            "ACTIVE" if str(self.desired) != "0" else "gone",
        )


class LocalScaleInOperator(ScaleNoopOperator):
    """Local stand-in for scale_in: logs what ECS would do, then the run's progress note.

    on_done(context, cost_line): called after (publish.scale_in_done).
    """

    def __init__(self, *, on_done: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_done = on_done

    def execute(self, context: Context) -> None:
        super().execute(context)
        if self.on_done is not None:
            try:
                self.on_done(context, None)
            except Exception as exc:  # the note is a convenience, never fatal
                self.log.warning("Could not update the run note: %s", exc)
