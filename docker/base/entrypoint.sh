#!/usr/bin/env bash
#
# Entrypoint of the engine's Linux base image: runs the task runner, `python -m wbrun`, with the
# arguments the container was started with (on ECS, the container command override: `run
# --manifest ... --chunk N ...` or `aggregate --manifest ...`) and exits with its exit code: 0,
# the failing item's own code, 64/65 (bad manifest), 74 (storage), 124 (an item's timeout).

set -euo pipefail

main() {
  if [[ $# -eq 0 ]]; then
    set -- --help
  fi
  # exec: the runner replaces this shell, so signals from `docker stop` / ECS StopTask reach it,
  # and it stops the study's command in turn.
  exec python -m wbrun "$@"
}

main "$@"
