# Memory Connector: developer and CI entry points.
#
# Every target runs tools from the project virtualenv (.venv). The venv is created
# on first use, and requirements-dev.txt is (re)installed only when a requirements
# file is newer than the stamp file .venv/.installed.
#
#   make            list targets
#   make run        migrate, ensure the demo user, start the dev server
#   make test       run pytest (extra args: make test PYTEST_ARGS="-k memories -x")

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
# Interpreter used to create the venv: python3.11 if present, else python3.
BASE_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
PYTEST_ARGS ?=
# With DATABASE_URL unset, run and test get the embedded PostgreSQL (var/pgdata), started for
# them and stopped after them (common/embedded_postgres.py).
WITH_PG     := $(PY) -m common.embedded_postgres run --
# check --deploy only reports warnings; make them fail the target.
CHECK_DEPLOY_ARGS ?= --fail-level WARNING

.PHONY: help install run test lint fmt migrations-check check-deploy bench clean distclean

help: ## List the available targets
	@echo "Usage: make <target>"
	@echo
	@grep -E '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-18s %s\n", $$1, $$2}'

# --- virtualenv -------------------------------------------------------------

$(PY):
	@test -n "$(BASE_PYTHON)" || { echo "Neither python3.11 nor python3 found on PATH" >&2; exit 1; }
	$(BASE_PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -r requirements-dev.txt
	@touch $@

install: $(STAMP) ## Create .venv and install requirements-dev.txt (if changed)

# --- running ----------------------------------------------------------------

# The process management lives in scripts/run-local.sh: migrate, the demo user, then the
# dev server with a Celery worker and beat beside it (stopped with it), on the embedded
# PostgreSQL unless DATABASE_URL says otherwise.
run: $(STAMP) ## Migrate, ensure the demo user, run the dev server on 127.0.0.1:8000
	$(WITH_PG) ./scripts/run-local.sh

# --- quality gates ----------------------------------------------------------

test: $(STAMP) ## Run the test suite (pass extra args with PYTEST_ARGS=...)
	$(WITH_PG) $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP) ## Format the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrations-check: $(STAMP) ## Fail if models changed without a migration
	$(WITH_PG) $(PY) manage.py makemigrations --check --dry-run

# Throwaway secrets, generated per run: only good for the system checks.
check-deploy: $(STAMP) ## manage.py check --deploy against the production settings
	DJANGO_SETTINGS_MODULE=memoryconnector.settings.production \
	DJANGO_SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(64))')" \
	JWT_SIGNING_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(64))')" \
	DJANGO_ALLOWED_HOSTS=example.com \
		$(PY) manage.py check --deploy $(CHECK_DEPLOY_ARGS)

# BENCH names some of them (make bench BENCH=pipeline); all of them when empty.
BENCH ?=
bench: $(STAMP) ## Run the benchmarks (bench/run_all.py; BENCH=pipeline for one); figures go to bench/results/
	@if [ -f bench/run_all.py ]; then \
		$(WITH_PG) $(PY) bench/run_all.py $(BENCH); \
	else \
		echo "No benchmarks exist yet (bench/run_all.py is missing)."; \
	fi

# --- housekeeping -----------------------------------------------------------

clean: ## Remove caches and build output (keeps .venv and var/)
	rm -rf .pytest_cache .ruff_cache staticfiles test-results
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean ## clean, and also remove .venv
	rm -rf $(VENV)
