# Switchboard: `make run` (a running demo from a fresh clone) and `make test` (the whole suite, real services).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench services clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m inbox.cli run

services:
	bash .ci/services.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy inbox connectors workers
	$(VENV)/bin/lint-imports
	DATABASE_URL= $(PY) manage.py makemigrations --check --dry-run

# Tests run against PostgreSQL and Redis (never SQLite): .ci/services.sh makes sure both are up.
TEST_ENV := DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/switchboard} \
            REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/13}

test: $(STAMP) services lint
	$(TEST_ENV) bash .ci/pytest.sh

# Each script prints its numbers; docs/benchmarks.md records them (writing it automatically is issue 9).
bench: $(STAMP) services
	$(PY) bench/langid.py
	$(PY) bench/ingest.py --events 10000 --repeat 3
	$(PY) bench/email.py --mails 1000 --repeat 3
	$(PY) bench/telegram.py --updates 2000 --repeat 3
	$(PY) bench/webchat.py
	$(PY) bench/inbox.py
	$(PY) bench/metrics.py

clean:
	rm -rf $(VENV) var build *.egg-info
