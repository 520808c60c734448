# Two commands: `make demo` runs the pipeline on the embedded default, `make test` runs the tests.
# Both create .venv in the project root on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: venv demo test test-ui lint format ui bench bench-backfill celery-workers clean

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

# The UI in a real browser (ui_tests/, docs/screenshots/ui/): a fresh demo instance under
# `dagster dev` on 127.0.0.1, driven through Debian's headless Chromium (installed here when
# missing) by playwright-core from npm, which never downloads a browser of its own. About 2 min.
CHROMIUM ?= /usr/bin/chromium
UI_MODULES := ui_tests/node_modules/.package-lock.json
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
		|| ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

$(UI_MODULES): ui_tests/package.json ui_tests/package-lock.json
	cd ui_tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund

test-ui: $(STAMP) $(CHROMIUM) $(UI_MODULES)
	cd ui_tests && CHROMIUM=$(CHROMIUM) node --test --test-concurrency=1 --test-reporter=spec ui.test.js

lint: $(STAMP)
	$(VENV)/bin/ruff check asn_pipeline asn_pipeline_tests scripts bench ui_tests
	$(VENV)/bin/ruff format --check asn_pipeline asn_pipeline_tests scripts bench ui_tests

format: $(STAMP)
	$(VENV)/bin/ruff check --fix asn_pipeline asn_pipeline_tests scripts bench ui_tests
	$(VENV)/bin/ruff format asn_pipeline asn_pipeline_tests scripts bench ui_tests

# The benchmark of docs/performance.md: minutes on first use (it generates the workload and the
# history databases under bench/data/), results in bench/results/.
bench: $(STAMP)
	$(PY) -m bench.run

# A year of demo-sized days backfilled as one run and as a run per day through a real daemon
# (docs/performance.md, "Backfills"): about a quarter of an hour; results in bench/results/.
bench-backfill: $(STAMP)
	$(PY) -m bench.backfill

# N Celery workers on this host for runs with ASN_PIPELINE_EXECUTOR=celery (docs/deployment.md,
# "Celery workers"); they read the same ASN_PIPELINE_* and DAGSTER_PG_URL as the runs.
N ?= 2
celery-workers: $(STAMP)
	$(VENV)/bin/asn-pipeline-celery-workers --workers $(N)

ui: $(STAMP)
	$(PY) scripts/run_demo.py --ui

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
	rm -rf dagster_home/postgres/storage dagster_home/postgres/logs
