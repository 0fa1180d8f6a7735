"""The command line the container runs: `python -m bersim simulate|aggregate ...`.

    simulate  --ebn0-db X --max-bits N --seed S [--target-errors E] [--task-index I] --output URI
    aggregate --input URI_PREFIX --output URI_PREFIX [--expected-tasks N]

Exit codes: 0 ok; 1 runtime failure (S3 unreachable, access denied, Octave failed);
2 bad input (one line on stderr, `bersim: error: ...`, nothing written);
3 aggregate wrote its outputs but expected task results were missing.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, NoReturn

from bersim import __version__
from bersim.errors import (
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    BersimError,
    MissingTasksError,
    RuntimeFailure,
    UsageError,
)
from bersim.result import EBN0_MAX_DB, EBN0_MIN_DB, MAX_BITS, SEED_MAX, TaskResult, provenance
from bersim.storage import Storage, parse_uri

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

PROG = "bersim"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become UsageError: one line, no usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def integer(*, low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an exact integer in [low, high]; `2e8` is accepted, `2.5` is not."""

    def parse(text: str) -> int:
        try:
            number = Decimal(text.strip())
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not number.is_finite() or number != number.to_integral_value():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        value = int(number)
        if value < 0 and low >= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is negative; must be >= {low}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is outside [{low}, {high}]")
        return value

    parse.__name__ = "integer"
    return parse


def ebn0(text: str) -> float:
    """An argparse type: Eb/N0 in dB, a finite number in [EBN0_MIN_DB, EBN0_MAX_DB]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not EBN0_MIN_DB <= value <= EBN0_MAX_DB:
        raise argparse.ArgumentTypeError(
            f"{text!r} dB is outside [{EBN0_MIN_DB:g}, {EBN0_MAX_DB:g}] dB"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser for both commands (the DAG's planner tests parse their argv with it)."""
    parser = _Parser(
        prog=PROG,
        description="Monte Carlo BER of BPSK over AWGN with a GNU Octave kernel.",
        epilog="exit codes: 0 ok, 1 runtime failure (S3, Octave), 2 bad input, "
        "3 aggregate wrote its outputs but expected tasks were missing",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = commands.add_parser(
        "simulate",
        help="simulate one Eb/N0 point and write one JSON task result",
        allow_abbrev=False,
    )
    sim.add_argument(
        "--ebn0-db",
        type=ebn0,
        required=True,
        help=f"Eb/N0 in dB, in [{EBN0_MIN_DB:g}, {EBN0_MAX_DB:g}]",
    )
    sim.add_argument(
        "--max-bits",
        type=integer(low=1, high=MAX_BITS),
        required=True,
        help="bits to simulate (all of them unless --target-errors stops earlier); 2e8 is fine",
    )
    sim.add_argument(
        "--seed",
        type=integer(low=0, high=SEED_MAX),
        required=True,
        help="seed of Octave's generator; the same seed gives the same counts",
    )
    sim.add_argument(
        "--target-errors",
        type=integer(low=0, high=MAX_BITS),
        default=0,
        help="stop once this many errors are counted (0 = simulate all --max-bits)",
    )
    sim.add_argument(
        "--task-index",
        type=integer(low=0, high=MAX_BITS),
        default=None,
        help="this task's index in the study (aggregate checks it against --expected-tasks)",
    )
    sim.add_argument(
        "--output",
        required=True,
        metavar="URI",
        help="where to write the JSON: s3://bucket/key or a local path",
    )

    agg = commands.add_parser(
        "aggregate",
        help="sum the task results under a prefix into results.csv, .json and .png",
        allow_abbrev=False,
    )
    agg.add_argument(
        "--input",
        required=True,
        metavar="URI_PREFIX",
        help="prefix holding the task results (s3://bucket/prefix or a folder), read recursively",
    )
    agg.add_argument(
        "--output",
        required=True,
        metavar="URI_PREFIX",
        help="prefix to write results.csv/.json/.png under",
    )
    agg.add_argument(
        "--expected-tasks",
        type=integer(low=1, high=MAX_BITS),
        default=None,
        metavar="N",
        help="task indexes 0..N-1 expected; missing ones are listed and the exit code is 3",
    )
    return parser


def simulate(args: argparse.Namespace, storage: Storage) -> None:
    """Run the kernel once and write its result; check the output before spending the time."""
    output = parse_uri(args.output, option="--output", is_prefix=False)
    storage.check_writable(output)
    try:
        # Imported here: numpy and the Octave bridge, which aggregate never needs.
        from bersim.kernel import KernelError, run_kernel  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeFailure(f"cannot load the Octave bridge: {exc}") from exc
    try:
        kernel = run_kernel(
            ebn0_db=args.ebn0_db,
            max_bits=args.max_bits,
            seed=args.seed,
            target_errors=args.target_errors,
        )
    except KernelError as exc:
        raise RuntimeFailure(str(exc)) from exc
    # Never publish counts that break the kernel's own contract.
    exact = args.target_errors == 0
    if not (0 <= kernel.errors <= kernel.bits <= args.max_bits and kernel.bits >= 1) or (
        exact and kernel.bits != args.max_bits
    ):
        raise RuntimeFailure(
            f"Octave kernel returned inconsistent counts: {kernel.errors} errors in "
            f"{kernel.bits} bits for --max-bits {args.max_bits}"
        )
    task = TaskResult(
        task_index=args.task_index,
        ebn0_db=args.ebn0_db,
        bits=kernel.bits,
        errors=kernel.errors,
        seed=args.seed,
        target_errors=args.target_errors,
        max_bits=args.max_bits,
        elapsed_s=kernel.elapsed_s,
        provenance=provenance(octave_version=kernel.octave_version),
    )
    storage.write_bytes(output, task.to_json_bytes())
    label = "" if args.task_index is None else f" task {args.task_index}"
    rate = kernel.bits / kernel.elapsed_s if kernel.elapsed_s > 0 else math.inf
    print(
        f"{PROG}: simulate{label}: Eb/N0 {args.ebn0_db:g} dB, {kernel.bits} bits, "
        f"{kernel.errors} errors (BER {kernel.errors / kernel.bits:.3e}), "
        f"kernel {kernel.elapsed_s:.2f} s ({rate:.3g} bit/s) -> {output}",
        flush=True,
    )


def aggregate(args: argparse.Namespace, storage: Storage) -> None:
    """Aggregate the results; raise MissingTasksError (exit 3) after writing if some are missing."""
    from bersim.aggregate import missing_message, run_aggregate  # noqa: PLC0415

    input_prefix = parse_uri(args.input, option="--input", is_prefix=True)
    output_prefix = parse_uri(args.output, option="--output", is_prefix=True)
    summary = run_aggregate(
        storage,
        input_prefix=input_prefix,
        output_prefix=output_prefix,
        expected_tasks=args.expected_tasks,
    )
    print(
        f"{PROG}: aggregate: {summary.tasks} tasks, {len(summary.rows)} Eb/N0 points, "
        f"{summary.bits} bits, {summary.errors} errors -> "
        f"{output_prefix.child('results.png')}",
        flush=True,
    )
    if summary.missing_tasks:
        raise MissingTasksError(missing_message(summary))


def _fail(message: str, code: int) -> int:
    one_line = " ".join(str(message).split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
        command = simulate if args.command == "simulate" else aggregate
        command(args, Storage())
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except BersimError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        # A bug, not bad input: keep the traceback for whoever reads the task's log.
        traceback.print_exc()
        return _fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_RUNTIME)
    return EXIT_OK


__all__ = ["EXIT_USAGE", "build_parser", "main"]
