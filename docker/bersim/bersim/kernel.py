"""Python bridge to the Octave kernel `octave/bersim_kernel.m`, driven through oct2py.

One call starts one Octave session, runs the kernel once and closes the session again,
whatever happens: the container runs one simulation per process.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from oct2py import Oct2Py

OCTAVE_DIR = Path(__file__).resolve().parent / "octave"
"""Directory holding the kernel's .m files (shipped as package data)."""

KERNEL_FUNCTION = "bersim_kernel"

MODES = ("fast", "explicit")
"""Kernel variants: `fast` sends all +1 (exact by symmetry), `explicit` random bits."""

_MAX_EXACT = 2**53
"""Octave hands counts back as doubles, exact up to 2**53."""


def _default_chunk_bits() -> int:
    """The kernel's default chunk size (bits), read from the .m file that sets it."""
    source = (OCTAVE_DIR / f"{KERNEL_FUNCTION}.m").read_text()
    match = re.search(r"^\s*chunk_bits = 2\^(\d+);", source, re.MULTILINE)
    if match is None:
        raise KernelError(f"no default chunk_bits = 2^N; in {KERNEL_FUNCTION}.m")
    return 2 ** int(match.group(1))


class KernelError(RuntimeError):
    """The Octave kernel could not be started, failed, or returned something unusable."""


DEFAULT_CHUNK_BITS = _default_chunk_bits()
"""Bits per chunk when the caller gives none: early stop happens on these boundaries.

Read from bersim_kernel.m, the one place that sets it, so planners, tests and benchmarks that
model the kernel cannot drift from it.
"""


@dataclass(frozen=True)
class KernelResult:
    """What one kernel run measured.

    bits: bits actually simulated; errors: bit errors counted;
    elapsed_s: time of the simulation loop measured inside Octave (tic/toc, no start-up);
    octave_version: the GNU Octave version that ran it.
    """

    bits: int
    errors: int
    elapsed_s: float
    octave_version: str


def _scalar(value: object, name: str) -> float:
    """Return the one number Octave sent back (oct2py may wrap it in an array)."""
    try:
        array = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise KernelError(f"Octave kernel returned a non-numeric {name}: {value!r}") from exc
    if array.size != 1 or not np.isfinite(array[0]):
        raise KernelError(f"Octave kernel returned an invalid {name}: {value!r}")
    return float(array[0])


def _exact_int(value: object, name: str) -> int:
    """Convert a count Octave returned as a double to an exact int."""
    number = _scalar(value, name)
    if not number.is_integer() or number < 0 or number > _MAX_EXACT:
        raise KernelError(f"Octave kernel returned an invalid {name}: {value!r}")
    return int(number)


def _configure_environment() -> None:
    """Point oct2py at the CLI build of Octave and keep Octave from writing a history.

    Raises KernelError in one line when the executable is missing (oct2py would print a
    traceback of its own).
    """
    executable = os.environ.get("OCTAVE_EXECUTABLE") or "octave-cli"
    if shutil.which(executable) is None:
        raise KernelError(f"Octave not found: {executable!r} (set OCTAVE_EXECUTABLE)")
    os.environ["OCTAVE_EXECUTABLE"] = executable
    # Without a writable history file Octave prints a spurious "error: ignoring const
    # execution_exception& while preparing to exit" on stderr at every exit.
    os.environ.setdefault("OCTAVE_HISTFILE", os.devnull)


def _session() -> Oct2Py:
    """Return an Octave session to use as a context manager (started on entry, closed on exit).

    Importing oct2py already starts a default session (`oct2py.octave`); reusing it instead
    of starting a second one saves an Octave start-up per call. Entering it restarts it when
    a previous call closed it. Raises KernelError when Octave cannot be started.
    """
    _configure_environment()  # before the import: it starts Octave
    # oct2py reports a failed default session by printing, not raising: keep that text
    # for the error message instead of letting it reach the caller's stdout/stderr.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            import oct2py  # noqa: PLC0415  (the import starts Octave; only this call needs it)
    except Exception as exc:
        raise KernelError(f"cannot start Octave: {exc}") from exc

    octave = getattr(oct2py, "octave", None)
    if octave is not None:
        return octave
    try:
        return oct2py.Oct2Py()
    except Exception as exc:
        detail = captured.getvalue().strip().splitlines()
        hint = f" ({detail[-1]})" if detail else ""
        raise KernelError(f"cannot start Octave: {exc}{hint}") from exc


def run_kernel(
    *,
    ebn0_db: float,
    max_bits: int,
    seed: int,
    target_errors: int = 0,
    chunk_bits: int | None = None,
    mode: str = "fast",
) -> KernelResult:
    """Run the Octave kernel once and return its counts.

    ebn0_db: Eb/N0 in dB. max_bits: bits to simulate (exactly, without early stop; counts
    are exact up to 2**53). seed: seeds Octave's default generator (rand/randn "state";
    Octave reduces it modulo 2**32 - 1). target_errors: stop after the chunk that reaches
    this many errors (0 = off). chunk_bits: bits per chunk (None = the kernel's default).
    mode: "fast" (all +1 transmission) or "explicit" (random bits; the reference).
    Raises KernelError when Octave cannot be started or the kernel fails.
    """
    # Octave's arithmetic on integer classes saturates; doubles are exact up to 2**53.
    args: tuple[object, ...] = (
        float(ebn0_db),
        float(max_bits),
        float(seed),
        float(target_errors),
        float(chunk_bits) if chunk_bits is not None else [],
        mode,
    )
    session = _session()
    try:
        # Leaving the block closes Octave, also when the kernel failed.
        with session as octave:
            # oct2py ends Octave with a signal, on which Octave would dump its workspace
            # into the working directory as `octave-workspace`.
            octave.feval("crash_dumps_octave_core", False, nout=0)
            octave.addpath(str(OCTAVE_DIR))
            version = str(octave.feval("version"))
            bits, errors, elapsed_s = octave.feval(KERNEL_FUNCTION, *args, nout=3)
    except Exception as exc:
        raise KernelError(f"Octave kernel failed: {exc}") from exc
    return KernelResult(
        bits=_exact_int(bits, "bit count"),
        errors=_exact_int(errors, "error count"),
        elapsed_s=_scalar(elapsed_s, "elapsed time"),
        octave_version=version,
    )
