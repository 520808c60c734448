# Two commands: `make demo` runs the pipeline on the embedded default, `make test` runs the tests.
# Both create .venv in the project root on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: venv demo test lint format ui bench bench-backfill clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required (set PYTHON=...)") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/run_demo.py

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check asn_pipeline asn_pipeline_tests scripts bench
	$(VENV)/bin/ruff format --check asn_pipeline asn_pipeline_tests scripts bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix asn_pipeline asn_pipeline_tests scripts bench
	$(VENV)/bin/ruff format asn_pipeline asn_pipeline_tests scripts bench

# The benchmark of docs/performance.md: minutes on first use (it generates the workload and the
# history databases under bench/data/), results in bench/results/.
bench: $(STAMP)
	$(PY) -m bench.run

# A year of demo-sized days backfilled as one run and as a run per day through a real daemon
# (docs/performance.md, "Backfills"): about a quarter of an hour; results in bench/results/.
bench-backfill: $(STAMP)
	$(PY) -m bench.backfill

ui: $(STAMP)
	$(PY) scripts/run_demo.py --ui

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
	rm -rf dagster_home/postgres/storage dagster_home/postgres/logs
