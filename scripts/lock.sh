#!/usr/bin/env bash
#
# Re-resolves constraints.txt: installs requirements.txt (and bersim) into a
# scratch venv with no constraints and freezes the result. Run it after
# changing a pin in requirements.txt, then review the diff.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT

main() {
  local scratch
  scratch="$(mktemp -d)"
  trap 'rm -rf "${scratch}"' EXIT
  "${ROOT}/.venv/bin/python" -m venv "${scratch}/venv"
  "${scratch}/venv/bin/pip" install -q -r "${ROOT}/requirements.txt"
  {
    echo "# Full resolved lock of requirements.txt for CPython 3.12 on Linux x86_64 (pip freeze)."
    echo "# Regenerate with: make lock"
    "${scratch}/venv/bin/pip" freeze | grep -v '^-e' | sort -f
  } >"${ROOT}/constraints.txt"
}

main "$@"
