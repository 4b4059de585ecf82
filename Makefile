# `make run`: venv + default graph on real data; `make test`: venv + test suite. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home
DOMAINS ?= ml-1m

.PHONY: setup run test dev clean

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

test: setup
	$(PY) -m pytest -q -rs

dev: setup $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) .data
