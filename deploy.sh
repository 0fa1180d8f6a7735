#!/usr/bin/env bash
#
# Deploys windows-batch-compute to AWS: ./deploy.sh --help. A door to the deployer (deployer/,
# Python, boto3), run from the project's .venv, which scripts/bootstrap.sh --venv creates or
# brings up to date first (a no-op when it is).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"${ROOT}/scripts/bootstrap.sh" --venv >&2
PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}" exec "${ROOT}/.venv/bin/python" -m deployer deploy "$@"
