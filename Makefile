# guarded-rollouts: every set-up step a fresh machine needs is reachable from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TESTBED := hack/testbed.sh

.PHONY: help venv test unit lint integration e2e testbed-up testbed-down testbed-env crds demo clean bench-detection

help:
	@echo "make test          install into $(VENV), build or reuse the test bed, run every test"
	@echo "make unit          unit tests and static checks only (no cluster)"
	@echo "make demo          bring up the test bed and show how to reach it"
	@echo "make testbed-up    start the local control plane + Prometheus (idempotent)"
	@echo "make testbed-down  stop everything the test bed started"
	@echo "make crds          regenerate crds/ from the pydantic models"
	@echo "make bench-detection  time-to-rollback and orders lost per bad-release scenario"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/lint-imports --config pyproject.toml

unit: lint
	$(VENV)/bin/pytest tests/unit -q

testbed-up: venv
	$(TESTBED) up

testbed-down:
	$(TESTBED) down

testbed-env:
	@$(TESTBED) env

# The one command: lint, unit tests, then integration and e2e tests against the test bed
# (or against GUARDED_TEST_KUBECONFIG when set, e.g. a kind cluster).
test: lint
	@if [ -z "$$GUARDED_TEST_KUBECONFIG" ]; then $(TESTBED) up; fi
	$(VENV)/bin/pytest tests -q -p no:cacheprovider

integration: venv
	$(VENV)/bin/pytest tests/integration -q

e2e: venv
	$(VENV)/bin/pytest tests/e2e -q

crds: venv
	$(PY) -m guarded.api.crdgen crds/

demo: venv
	$(TESTBED) up
	@echo
	@echo "The test bed is up. Reach it with:"
	@echo "  source <($(TESTBED) env)"
	@echo "  kubectl get nodes"
	@echo "Stop it with: make testbed-down"

# Benchmarks: run on demand, never by the test suite. Results land in bench/results/.
bench-detection: venv
	$(TESTBED) up
	$(PY) bench/detection.py

clean: testbed-down
	rm -rf $(VENV) .pytest_cache
