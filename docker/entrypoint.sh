#!/usr/bin/env bash
#
# Entrypoint of the Linux bersim image: runs `python -m bersim` with the arguments the container
# was started with (on ECS, the container command override) and exits with its exit code:
# 0 ok, 1 runtime failure, 2 bad input, 3 aggregate wrote its outputs but tasks were missing.

set -euo pipefail

main() {
  if [[ $# -eq 0 ]]; then
    set -- --help
  fi
  # exec: bersim replaces this shell, so signals from `docker stop` / ECS StopTask reach it.
  exec python -m bersim "$@"
}

main "$@"
