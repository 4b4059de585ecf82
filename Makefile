# `make run`: venv + default graph on real data; `make test`: venv + test suite. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home
DOMAINS ?= ml-1m

.PHONY: setup run test test-fast lint dev clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

run: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -W ignore -m jobs.default_run --domains $(DOMAINS)

test: setup chromium
	$(PY) -m pytest -q -rs

# The inner loop (< 3 min on 2 cores): unit tests only, no Dagster run, subprocess, browser or real model.
test-fast: setup
	$(PY) -m pytest -q -rs -m "fast and not slow"

lint: setup
	$(VENV)/bin/ruff check .

# Debian's Chromium for the UI test (needs root, as on CI); without it that one test reports a skip.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the UI test will be skipped"

dev: setup $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) .data
