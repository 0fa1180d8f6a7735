#!/usr/bin/env bash
#
# Installs everything the project needs on a Debian machine: Debian packages
# (Octave, Chromium for the browser test), the virtual environment .venv with
# the pinned Python packages, the task runner (wbrun) and bersim, and checkov in its own
# .venv-checkov (it cannot share MWAA's pins). Each step is skipped when already done, so
# re-running it is quick.
#   scripts/bootstrap.sh          everything (make setup)
#   scripts/bootstrap.sh --venv   .venv only: what deploy.sh and destroy.sh run the deployer with
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly VENV="${ROOT}/.venv"
readonly CHECKOV_VENV="${ROOT}/.venv-checkov"
readonly APT_PACKAGES=(octave chromium fonts-liberation)

err() {
  echo "bootstrap: $*" >&2
}

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    err "need root (or sudo) to run: $*"
    return 1
  fi
}

install_debian_packages() {
  local missing=()
  local pkg
  for pkg in "${APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("${pkg}")
  done
  if [[ "${#missing[@]}" -eq 0 ]]; then
    return 0
  fi
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# MWAA runs Python 3.12: prefer it, fall back to any Python 3.10+ that has venv.
find_python() {
  local candidate
  for candidate in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
    /usr/local/bin/python3.12 python3; do
    if "${candidate}" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 10)' \
      >/dev/null 2>&1; then
      echo "${candidate}"
      return 0
    fi
  done
  return 1
}

make_venv() {
  local venv="$1"
  local python
  if [[ -x "${venv}/bin/python" ]]; then
    return 0
  fi
  if ! python="$(find_python)"; then
    install_debian_packages python3-venv
    python="$(find_python)" || { err "no Python 3.10+ with venv found"; return 1; }
  fi
  echo "bootstrap: creating ${venv} with $("${python}" --version)"
  "${python}" -m venv "${venv}"
  pip_quiet "${venv}/bin/python" -m pip install -q --upgrade pip
}

# This machine's pip configuration lists local mirrors that are empty for most
# packages; pip warns about each one. Drop that noise, keep every other line.
pip_quiet() {
  "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2)
}

# A stamp holding the checksum of the inputs makes a second run a no-op.
up_to_date() {
  local stamp="$1"
  shift
  [[ -f "${stamp}" ]] && [[ "$(cat "$@" | sha256sum)" == "$(cat "${stamp}")" ]]
}

install_main_venv() {
  local inputs=("${ROOT}/requirements.txt" "${ROOT}/constraints.txt"
    "${ROOT}/docker/base/pyproject.toml" "${ROOT}/docker/bersim/pyproject.toml")
  local stamp="${VENV}/.bootstrap-stamp"
  if [[ -f "${stamp}" ]] && ! up_to_date "${stamp}" "${inputs[@]}"; then
    # A changed lock can drop packages; pip would keep them beside the new pins. Start afresh.
    echo "bootstrap: the pins changed; recreating .venv"
    rm -rf "${VENV}"
  fi
  make_venv "${VENV}"
  if up_to_date "${stamp}" "${inputs[@]}"; then
    return 0
  fi
  echo "bootstrap: installing pinned Python packages into .venv"
  pip_quiet "${VENV}/bin/pip" install -q -r "${ROOT}/requirements.txt" -c "${ROOT}/constraints.txt"
  # The engine's task runner (every study's container runs it; the local backend runs it here)
  # and the BER study's package, editable.
  pip_quiet "${VENV}/bin/pip" install -q --no-deps -e "${ROOT}/docker/base" -e "${ROOT}/docker/bersim"
  "${VENV}/bin/pip" check
  cat "${inputs[@]}" | sha256sum >"${stamp}"
}

# checkov pins old boto3, packaging and networkx: it cannot share .venv.
install_checkov_venv() {
  local inputs=("${ROOT}/requirements-checkov.txt")
  local stamp="${CHECKOV_VENV}/.bootstrap-stamp"
  make_venv "${CHECKOV_VENV}"
  if up_to_date "${stamp}" "${inputs[@]}"; then
    return 0
  fi
  echo "bootstrap: installing checkov into .venv-checkov"
  pip_quiet "${CHECKOV_VENV}/bin/pip" install -q -r "${ROOT}/requirements-checkov.txt"
  cat "${inputs[@]}" | sha256sum >"${stamp}"
}

main() {
  if [[ "${1:-}" == "--venv" ]]; then
    install_main_venv
    return
  fi
  install_debian_packages
  install_main_venv
  if [[ -f "${ROOT}/requirements-checkov.txt" ]]; then
    install_checkov_venv
  fi
}

main "$@"
