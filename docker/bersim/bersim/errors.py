"""The exceptions the command line turns into one-line messages and exit codes.

Exit codes (the container contract): 0 ok; 1 runtime failure (I/O, Octave: a retry may help);
2 bad input (the arguments or the input data are wrong: a retry will not help);
3 aggregate wrote its outputs but expected task results were missing.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_MISSING_TASKS = 3


class BersimError(Exception):
    """An error with a one-line message for the user and the exit code it maps to."""

    exit_code = EXIT_RUNTIME


class UsageError(BersimError):
    """Bad input: an argument, a URI, a bucket that does not exist, a foreign result file."""

    exit_code = EXIT_USAGE


class RuntimeFailure(BersimError):
    """A failure of the environment: S3 unreachable, access denied, Octave failed."""

    exit_code = EXIT_RUNTIME


class MissingTasksError(BersimError):
    """aggregate wrote its outputs, but some expected task results were not there."""

    exit_code = EXIT_MISSING_TASKS
