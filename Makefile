# Every target installs what it needs first (scripts/bootstrap.sh: Debian
# packages, .venv with the pinned Python packages, checkov's own venv); the
# install is skipped when nothing changed.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k aggregate'.
PYTEST_ARGS ?=
# pytest-xdist workers for make test/unit: much of the suite waits on servers, polls and
# deadlines (on 2 cores it keeps about 1.3 of them busy), so four workers overlap the waits
# (work units in tests/conftest.py); on 2 cores 4 beat 2 and 6. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 4
# The trigger form's JSON for make run, e.g. make run CONF='{"num_tasks": 20}'.
CONF ?=
# The study make run and make ui run: a folder under dags/studies/ (default: the BER study).
STUDY ?=
# The local Airflow's port on 127.0.0.1 for make run and make ui.
PORT ?= 8080

SHELL_SCRIPTS := $(sort deploy.sh destroy.sh .ci/run $(wildcard scripts/*.sh docker/*/*.sh))
# Each image's folder: docker/base/ (the engine's) and docker/<study>/.
DOCKERFILES := $(wildcard docker/*/Dockerfile*)
TEMPLATES := $(wildcard cloudformation/*.yaml)

.PHONY: help setup run ui test unit lint bench screenshots lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## Install Octave, Chromium, .venv and checkov (skipped when up to date)
	@scripts/bootstrap.sh

run: setup ## Run a study locally through Airflow (STUDY=option_pricing CONF='{"Batches": 10}')
	@$(PY) scripts/run_local.py --study '$(STUDY)' --port '$(PORT)' --conf '$(CONF)'

ui: setup ## Start Airflow locally with the DAG, for "Trigger DAG w/ config"
	@$(PY) scripts/run_local.py --study '$(STUDY)' --port '$(PORT)' --ui

test: setup lint unit ## Lint, then run every test (the command CI runs)

unit: setup ## Run the tests only
	@$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

lint: setup ## ruff, mypy, hadolint, ShellCheck, cfn-lint, checkov
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/hadolint $(DOCKERFILES)
	@$(BIN)/shellcheck $(SHELL_SCRIPTS)
	@if [[ -n "$(TEMPLATES)" ]]; then $(BIN)/cfn-lint $(TEMPLATES); fi
	@if [[ -n "$(TEMPLATES)" ]]; then .venv-checkov/bin/checkov --quiet --compact --skip-download --framework cloudformation -d cloudformation; fi

bench: setup ## Print the performance figures (kernel, planning, DAG parse, local run)
	@$(PY) -m benchmarks

screenshots: setup ## Regenerate the README's screenshots from a real local run
	@$(BIN)/pytest tests/ui -m screenshots --screenshots-dir docs/img

lock: ## Re-resolve constraints.txt from requirements.txt in a scratch venv
	@scripts/lock.sh

clean: ## Remove the local Airflow home and results (keeps .venv)
	rm -rf .local
