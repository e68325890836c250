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

# Every benchmark, one after another (several share the switchboard_bench database), each printing progress on
# stderr and writing its measured tables into docs/benchmarks.md (bench/_report.py). About 90 minutes on 2 cores.
BENCH_WRITE := --write-docs
bench: $(STAMP) services
	$(PY) bench/langid.py $(BENCH_WRITE)
	$(PY) bench/langid.py --languages all --repeats 5 $(BENCH_WRITE)
	$(PY) bench/ingest.py $(BENCH_WRITE)
	$(PY) bench/email.py --mails 1000 --repeat 3 --latency-samples 60 $(BENCH_WRITE)
	$(PY) bench/telegram.py --updates 2000 --clients 8 --latency-samples 60 --repeat 3 $(BENCH_WRITE)
	$(PY) bench/webchat.py $(BENCH_WRITE)
	$(PY) bench/webchat.py --via ws --idle 0 $(BENCH_WRITE)
	$(PY) bench/outbound.py --replies 200 --repeat 3 $(BENCH_WRITE)
	$(PY) bench/inbox.py $(BENCH_WRITE)
	$(PY) bench/metrics.py $(BENCH_WRITE)
	$(PY) bench/memory.py --repeat 3 $(BENCH_WRITE)
	$(PY) bench/helpdesk.py --mails 1000 --repeat 3 $(BENCH_WRITE)

clean:
	rm -rf $(VENV) var build *.egg-info
