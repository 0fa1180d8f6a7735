"""The local backend: the same DAG on one machine, `bersim` as subprocesses, a folder for S3.

`simulate` and `aggregate` run exactly the command lines the ECS containers get, as
`[sys.executable, "-m", "bersim", *argv]`, with every `s3://bucket/key` argument replaced by
`<LOCAL_ROOT>/bucket/key` (same key layout). `scale_out` and `scale_in` only log what they would
do on AWS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, TriggerRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from windows_batch.cost_report import CLUSTER_SIZE_TEMPLATE
from windows_batch.plan import EXIT_MISSING_TASKS, FINAL_EXITS, exit_message
from windows_batch.results import PublishResultsMixin, local_path

if TYPE_CHECKING:
    from airflow.sdk import Context

    from windows_batch.settings import Settings


def to_local_argv(argv: Sequence[str], local_root: Path) -> list[str]:
    """The same argv with each `s3://bucket/key` replaced by `<local_root>/bucket/key`."""
    mapped = []
    for arg in argv:
        if arg.startswith("s3://"):
            path = str(local_path(arg, local_root))
            mapped.append(path + "/" if arg.endswith("/") and not path.endswith("/") else path)
        else:
            mapped.append(arg)
    return mapped


class BersimLocalOperator(BaseOperator):
    """Run `python -m bersim <command>` here, streaming its output into the task log.

    command: the bersim argv as planned for ECS (s3:// URIs are mapped to local paths);
    local_root: the directory standing in for S3.
    Exit 2 (bad input) and 3 (missing task results) fail the task without retries.
    """

    template_fields = ("command",)
    ui_color = "#e8f4e4"

    def __init__(self, *, command: list[str], local_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.local_root = local_root
        self._proc: subprocess.Popen[str] | None = None

    def run_bersim(self) -> int:
        argv = to_local_argv(list(self.command), Path(self.local_root))
        self.log.info("On ECS the container would run: python -m bersim %s", " ".join(self.command))
        self.log.info("Running: %s -m bersim %s", sys.executable, " ".join(argv))
        last_error = ""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bersim", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**os.environ, "OCTAVE_HISTFILE": os.environ.get("OCTAVE_HISTFILE", "/dev/null")},
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            self.log.info("%s", line)
            if line.startswith("bersim: error:"):
                last_error = line
        code = self._proc.wait()
        self._last_error = last_error
        return code

    def fail_for(self, code: int) -> None:
        message = exit_message(code, self._last_error or "see the log")
        if code in FINAL_EXITS:
            raise AirflowFailException(message)
        raise AirflowException(message)

    def execute(self, context: Context) -> Any:
        code = self.run_bersim()
        if code != 0:
            self.fail_for(code)

    def on_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)


class BersimLocalAggregateOperator(PublishResultsMixin, BersimLocalOperator):
    """`bersim aggregate` locally, then the results link and run note (even when partial)."""

    def __init__(self, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    def execute(self, context: Context) -> str | None:
        code = self.run_bersim()
        summary = None
        if code in (0, EXIT_MISSING_TASKS):
            summary = self.publish_results(context, partial=code != 0)
        if code != 0:
            self.fail_for(code)
        self.check_simulations(context)
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


def scale_out(settings: Settings) -> BaseOperator:
    return ScaleNoopOperator(task_id="scale_out", desired=CLUSTER_SIZE_TEMPLATE, settings=settings)


def scale_in(settings: Settings) -> BaseOperator:
    return ScaleNoopOperator(
        task_id="scale_in", desired=0, settings=settings, trigger_rule=TriggerRule.ALL_DONE
    )


def simulate(settings: Settings) -> Any:
    """The mapped simulate task, still to be `.expand(command=...)`-ed."""
    return BersimLocalOperator.partial(
        task_id="simulate",
        local_root=str(settings.local_root),
        execution_timeout=_timeout(settings),
    )


def aggregate(settings: Settings, *, command: Any) -> BaseOperator:
    return BersimLocalAggregateOperator(
        task_id="aggregate",
        command=command,
        local_root=str(settings.local_root),
        settings=settings,
        trigger_rule=TriggerRule.ALL_DONE,
        execution_timeout=_timeout(settings),
    )


def _timeout(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.task_timeout_s)
