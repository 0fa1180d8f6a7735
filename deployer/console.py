"""What the deployer prints: one line per step with its duration, tables, errors and questions.

A step's line comes when the step ends (`==> Stack wbc-ecs: updated (1m12s)`); what happens
inside it comes before, indented, and a wait longer than `progress_every_s` prints a progress
line, so a person never looks at a silent terminal for long. Errors go to stderr as
`<program>: error: ...`, like the shell scripts always did.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


class DeployError(Exception):
    """A failure the user can act on: its message is printed as is, and the exit code is 1."""


def format_duration(seconds: float) -> str:
    """0.4 s, 12 s, 3m05s, 1h02m."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass
class Step:
    """An open step; `result` is the word its line ends with (created, no changes, ...)."""

    title: str
    started_s: float
    result: str = "done"


@dataclass
class Console:
    program: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    assume_yes: bool = False
    clock: Callable[[], float] = time.monotonic
    progress_every_s: float = 30.0

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        """One step: its line, with its duration, is printed when it ends (failed too)."""
        step = Step(title=title, started_s=self.clock())
        try:
            yield step
        except BaseException:
            self.log(f"{title}: failed ({format_duration(self.clock() - step.started_s)})")
            raise
        self.log(f"{title}: {step.result} ({format_duration(self.clock() - step.started_s)})")

    def log(self, text: str) -> None:
        print(f"==> {text}", file=self.out, flush=True)

    def info(self, text: str) -> None:
        """A line inside the current step."""
        print(f"    {text}", file=self.out, flush=True)

    def progress(self, what: str, *, since_s: float) -> None:
        """A wait's progress line: what it waits for and how long it has waited."""
        self.info(f"{what} ({format_duration(self.clock() - since_s)} so far)")

    def error(self, text: str) -> None:
        print(f"{self.program}: error: {text}", file=self.err, flush=True)

    def warn(self, text: str) -> None:
        print(f"{self.program}: warning: {text}", file=self.err, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Left-aligned columns under a header and a rule; the last column is not padded."""
        widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers) - 1)]

        def line(cells: Sequence[str]) -> str:
            padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
            return "  ".join([*padded, cells[-1]]).rstrip()

        self.info(line(headers))
        self.info(line(["-" * width for width in widths] + ["-" * len(headers[-1])]))
        for row in rows:
            self.info(line(row))

    def confirm(self, question: str) -> bool:
        """Asks on stderr and reads one line of stdin; only 'yes' is yes. --yes answers yes."""
        if self.assume_yes:
            return True
        prompt = f"{question} Type 'yes' to continue: ".lstrip()
        print(prompt, end="", file=self.err, flush=True)
        answer = self.stdin.readline()
        if not self.stdin.isatty():
            print(file=self.err)  # what was typed did not end the prompt's line
        return answer.strip() == "yes"
