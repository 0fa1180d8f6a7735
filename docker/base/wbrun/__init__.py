"""The engine's task runner: runs a study's commands inside its container (and, locally, here).

`python -m wbrun run --manifest URI --chunk N` reads chunk N of a run's manifest (written by the
engine's plan_tasks), stages the step's files in (embedded files, the bundle, IN paths, each
item's own input), runs each item's command, publishes what it left in its OUT paths under the
run's prefix, and records each finished item and the chunk, so that a retry never runs a
finished item again. Exit code: 0, or the failing item's, or 64/65 (bad manifest, final) and
74 (storage, may pass).
"""

__version__ = "0.1.0"
