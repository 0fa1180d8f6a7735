"""The runner's command line (the container command the engine gives each ECS task).

    wbrun run --manifest URI --chunk N [--at OFFSET:LENGTH] [--sha DIGEST]
    wbrun aggregate --manifest URI
    wbrun exec -- COMMAND [ARGS...]

`run` runs chunk N of the manifest (its line found by byte range when --at is given, checked
against --sha); `aggregate` runs the aggregate step (always, also on a retry: it re-reads what
exists); `exec` runs one command as it is (the images' build-time smoke tests).
Exit codes: 0; the failing item's own code; 64 bad manifest or arguments; 65 the chunk is not
the one planned; 74 the run's objects could not be read or written; 124 an item's timeout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

from wbrun import __version__
from wbrun.runner import EXIT_USAGE, ChunkRunner, RunnerError, install_signal_handlers, log


def _at(text: str) -> tuple[int, int]:
    start, _, length = text.partition(":")
    if not (start.isdigit() and length.isdigit() and int(length) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not OFFSET:LENGTH")
    return int(start), int(length)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise RunnerError(message, EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wbrun", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one chunk of a manifest", allow_abbrev=False)
    run.add_argument("--manifest", required=True, help="the run's manifest/ prefix (s3:// or path)")
    run.add_argument("--chunk", required=True, type=int, help="the chunk's number")
    run.add_argument("--at", type=_at, default=None, help="OFFSET:LENGTH of its line")
    run.add_argument("--sha", default=None, help="the digest of its line, as planned")
    agg = commands.add_parser("aggregate", help="run the aggregate step", allow_abbrev=False)
    agg.add_argument("--manifest", required=True)
    exe = commands.add_parser("exec", help="run one command as it is", allow_abbrev=False)
    exe.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "exec":
            command = [a for a in args.argv if a != "--"] if args.argv[:1] == ["--"] else args.argv
            if not command:
                raise RunnerError("exec needs a command", EXIT_USAGE)
            return subprocess.call(command)
        runner = ChunkRunner(manifest=args.manifest)
        install_signal_handlers(runner)
        if args.command == "aggregate":
            entry = runner._json(runner.manifest + "aggregate.json", "the aggregate step")
            return runner.run_chunk(entry, name="aggregate", skip_done=False)
        entry = runner.chunk(args.chunk, at=args.at, sha=args.sha)
        return runner.run_chunk(entry, name=f"chunk-{args.chunk:05d}")
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except RunnerError as exc:
        log(f"error: {exc}")
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
