#!/usr/bin/env bash
#
# Removes what deploy.sh created, or with --pause what bills while idle: ./destroy.sh --help.
# A door to the deployer (deployer/, Python, boto3), run from the project's .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"${ROOT}/scripts/bootstrap.sh" --venv >&2
PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}" exec "${ROOT}/.venv/bin/python" -m deployer destroy "$@"
