# `make run`: venv + default graph on real data; `make test`: venv + test suite. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home
# When this make started: the summary at the end of `make run` counts setup and imports from here.
export PROFILEKIT_MAKE_STARTED := $(shell date +%s)
DOMAINS ?= ml-1m

.PHONY: setup run ablation test test-fast lint dev clean chromium

setup: $(STAMP)

# One line per phase (with the time), and pip's own progress for the long install: a fresh clone spends
# minutes here.
$(STAMP): pyproject.toml
	@echo "[$$(date +%T)] setup 1/3: virtual environment $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[$$(date +%T)] setup 2/3: upgrading pip"
	$(PY) -m pip install -q --upgrade pip
	@echo "[$$(date +%T)] setup 3/3: installing the project and its dependencies (JAX, torch, transformers, Dagster)"
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)
	@echo "[$$(date +%T)] setup done"

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

run: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -W ignore -m jobs.default_run --domains $(DOMAINS)

# Table 6 after `make run`: BLUE and every blue-* variant with one budget, their metrics and analyses.
ablation: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -W ignore -m jobs.ablation_grid --domains $(DOMAINS)

# Two workers, one test file each at a time (module fixtures are built once): one process alone keeps about one
# of the 2 cores busy, since most tests spend their time in Python, XLA compiles and subprocesses.
test: setup chromium
	$(PY) -m pytest -q -rs --durations=25 -n 2 --dist loadfile

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
