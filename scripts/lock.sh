#!/usr/bin/env bash
#
# Re-resolves constraints.txt against what Amazon MWAA's Airflow image installs: requirements.txt
# (and bersim) go into a scratch venv constrained by Apache Airflow's published constraints for
# Airflow 3.3.1 on Python 3.12, the file MWAA's image is built with, and the result is frozen.
# So every package that both the lock and Airflow's constraints name has MWAA's version.
#   scripts/lock.sh                         reads the constraints from Airflow's URL
#   AIRFLOW_CONSTRAINTS=path scripts/lock.sh  reads a local copy (machines without internet)
# Run it after changing a pin in requirements.txt, then review the diff. constraints.txt is for
# this project's .venv only: never upload it to MWAA (requirements-mwaa.txt is what MWAA gets).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly AIRFLOW_CONSTRAINTS_URL="https://raw.githubusercontent.com/apache/airflow/constraints-3.3.1/constraints-3.12.txt"

err() {
  echo "lock: $*" >&2
}

# Copies the constraints (a URL or a local file) to $2.
fetch_constraints() {
  local source="$1" target="$2"
  if [[ "${source}" =~ ^https?:// ]]; then
    "${ROOT}/.venv/bin/python" -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=60).read())' \
      "${source}" >"${target}" \
      || { err "cannot download ${source}; set AIRFLOW_CONSTRAINTS to a local copy"; return 1; }
  else
    [[ -f "${source}" ]] || { err "no such file: ${source}"; return 1; }
    cp "${source}" "${target}"
  fi
}

scratch=""

main() {
  local source="${AIRFLOW_CONSTRAINTS:-${AIRFLOW_CONSTRAINTS_URL}}"
  scratch="$(mktemp -d)"
  trap 'rm -rf "${scratch}"' EXIT
  fetch_constraints "${source}" "${scratch}/airflow-constraints.txt"
  "${ROOT}/.venv/bin/python" -m venv "${scratch}/venv"
  "${scratch}/venv/bin/pip" install -q -r "${ROOT}/requirements.txt" \
    -c "${scratch}/airflow-constraints.txt"
  "${scratch}/venv/bin/pip" check
  {
    echo "# Full resolved lock of requirements.txt for CPython 3.12 on Linux x86_64 (pip freeze),"
    echo "# constrained by Apache Airflow's 3.3.1 constraints for Python 3.12 (what MWAA's image"
    echo "# installs): every package named there has its version here. Regenerate with: make lock"
    echo "# Constraints used: sha256 $(sha256sum "${scratch}/airflow-constraints.txt" | cut -c1-64)"
    "${scratch}/venv/bin/pip" freeze | grep -v '^-e' | sort -f
  } >"${ROOT}/constraints.txt"
  "${ROOT}/.venv/bin/python" - "${ROOT}/constraints.txt" "${scratch}/airflow-constraints.txt" <<'PY'
import re
import sys


def pins(path):
    found = {}
    for line in open(path):
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^;\s]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


lock, airflow = pins(sys.argv[1]), pins(sys.argv[2])
both = sorted(set(lock) & set(airflow))
differ = [name for name in both if lock[name] != airflow[name]]
print(f"lock: {len(lock)} packages, {len(both)} named by Airflow's constraints, {len(differ)} differ")
for name in differ:
    print(f"lock: {name} {lock[name]} (Airflow/MWAA: {airflow[name]})")
sys.exit(1 if differ else 0)
PY
}

main "$@"
