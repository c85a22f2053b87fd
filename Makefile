# guarded-rollouts: every set-up step a fresh machine needs is reachable from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TESTBED := hack/testbed.sh

.PHONY: help venv test unit lint integration e2e testbed-up testbed-down testbed-env crds demo clean bench-detection bench-judges bench-fuzz bench-chaos \
	browser dashboard-screenshots

help:
	@echo "make test          install into $(VENV), build or reuse the test bed, run every test"
	@echo "make unit          unit tests and static checks only (no cluster)"
	@echo "make demo          a healthy release promoted, a bad one rolled back, orders lost vs unguarded"
	@echo "                  (timeline and chart in demo-output/; KEEP=1 keeps the test bed up)"
	@echo "make testbed-up    start the local control plane + Prometheus (idempotent)"
	@echo "make testbed-down  stop everything the test bed started"
	@echo "make crds          regenerate crds/ from the pydantic models"
	@echo "make chart         refresh charts/guarded-rollouts from the kustomize manifests, then lint it"
	@echo "make bench-detection  time-to-rollback and orders lost per bad-release scenario"
	@echo "make bench-judges     our judge vs fixed-threshold judges on simulated rollouts (no cluster)"
	@echo "make bench-looks      the false-rollback rate when judged at every scrape, not every interval (no cluster)"
	@echo "make bench-fuzz       1,200 fuzzed objects against the API server and an operator of its own"
	@echo "make bench-chaos      rollouts under operator kills, freezes, outages and conflicting writes (~20 min)"
	@echo "make bench-floor      where the time goes from a collapsed canary's Ready to its rollback, vs the floor"
	@echo "make bench-peers      the same bad and healthy releases under Argo Rollouts and guarded-rollouts (~30 min)"
	@echo "make bench-scale      N concurrent rollouts (SCALE_ARGS=\"--rollouts 50 --bad\"): cost per interval, a bad one's detection"
	@echo "make bench-soak       N = 335 rollouts kept in flight for 2 hours, operator RSS sampled (SOAK_ARGS; not CI)"
	@echo "make bench-scale-plot docs/images/scale-cost.png from bench/results/scale-*.json"
	@echo "make dashboard-screenshots  refresh docs/images/dashboard-*.png from the dashboard's browser test"
	@echo "make browser       install Debian's chromium for the browser test when missing (make test does)"
	@echo "make image         the operator's OCI image without Docker (hack/image.sh build; docs/image.md)"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check operator tests bench hack
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
# (or against GUARDED_TEST_KUBECONFIG when set, e.g. a kind cluster). Most tests wait on bakes, not on
# the CPU, so they run side by side on TEST_WORKERS workers that share one operator, as one operator
# serves a whole cluster; the tests marked exclusive (they stop, kill or replace the operator, or stop
# Prometheus) run afterwards, one at a time.
TEST_WORKERS ?= 4

test: lint browser
	@if [ -z "$$GUARDED_TEST_KUBECONFIG" ]; then $(TESTBED) up; fi
	@rc=0; \
	$(VENV)/bin/pytest tests -q -p no:cacheprovider -m "not exclusive" -n $(TEST_WORKERS) --maxschedchunk 1 || rc=$$?; \
	$(VENV)/bin/pytest tests -q -p no:cacheprovider -m exclusive || rc=$$?; \
	exit $$rc

# Debian's Chromium for the dashboard's browser test (Playwright drives it; it never downloads a browser).
CHROMIUM ?= /usr/bin/chromium

browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 chromium; }

# Refresh docs/images/dashboard-*.png from the dashboard's browser test against the test bed.
dashboard-screenshots: venv browser
	$(TESTBED) up
	GUARDED_DASHBOARD_SCREENSHOTS=docs/images $(VENV)/bin/pytest tests/e2e/test_dashboard.py -q -p no:cacheprovider

integration: venv
	$(VENV)/bin/pytest tests/integration -q

e2e: venv
	$(VENV)/bin/pytest tests/e2e -q

crds: venv
	$(PY) -m guarded.api.crdgen crds/

# The Helm chart copies the CRDs, RBAC, policies and dashboard from the kustomize manifests (a test
# fails while a copy is stale); helm itself is built from its Go module and cached like the test bed's.
.PHONY: chart
chart: venv
	$(PY) hack/sync_chart.py
	hack/build-binaries.sh helm
	source hack/versions.sh && "$$HELM_BIN_DIR/helm" lint --strict charts/guarded-rollouts

# The demo, the README's first command: brings up the test bed (honouring GUARDED_TESTBED_DIR and
# the GUARDED_*_PORT variables), runs hack/demo.py (a healthy release promoted, a bad one rolled
# back, orders lost against an unguarded rolling update; timeline and chart in $(DEMO_OUT)/), then
# takes the test bed down again, also when interrupted. KEEP=1 leaves the test bed and the demo's
# namespace running; a test bed that was already running before the demo is left running too.
DEMO_OUT ?= demo-output

demo: venv
	@keep="$(KEEP)"; \
	if ! $(TESTBED) status 2>/dev/null | grep -q 'not running'; then \
	  keep=1; echo "[demo] the test bed was already running: it stays up afterwards"; \
	fi; \
	if [ "$$keep" != 1 ]; then trap '$(TESTBED) down' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; fi; \
	$(TESTBED) up && $(PY) hack/demo.py --out $(DEMO_OUT) $(if $(filter 1,$(KEEP)),--keep) && \
	if [ "$$keep" = 1 ]; then \
	  echo "[demo] the test bed stays up: source <($(TESTBED) env); stop it with: make testbed-down"; \
	fi

# Benchmarks: run on demand, never by the test suite. Results land in bench/results/.
bench-detection: venv
	$(TESTBED) up
	$(PY) bench/detection.py

bench-judges: venv
	$(PY) bench/judges.py

# Does judging at every scrape (close looks) cost the false-rollback bound? In process, no cluster (~15 min):
# LOOKS_ARGS="--runs 300" for a quicker run.
.PHONY: bench-looks
bench-looks: venv
	$(PY) bench/looks.py $(LOOKS_ARGS)

bench-fuzz: venv
	$(TESTBED) up
	flock /tmp/guarded-testbed.lock $(PY) bench/fuzz.py

# Needs the test bed alone (it runs its own operators, restarts the API server, stops Prometheus); docs/chaos.md.
# CHAOS_ARGS passes options, e.g. CHAOS_ARGS="--kills 50 --stops 3" for a shorter run.
bench-chaos: venv
	$(TESTBED) up
	flock /tmp/guarded-testbed.lock $(PY) bench/chaos.py $(CHAOS_ARGS)

# Argo Rollouts (built from its Go module by hack/argo-rollouts.sh, run as a local process) against our operator on
# the same releases; needs the test bed alone (it runs an operator of its own). docs/peers.md.
# PEERS_ARGS passes options, e.g. PEERS_ARGS="--systems argo-tuned,guarded --healthy 5".
.PHONY: bench-peers
bench-peers: venv
	$(TESTBED) up
	hack/argo-rollouts.sh
	flock /tmp/guarded-testbed.lock $(PY) bench/peers.py $(PEERS_ARGS)

# Where the time goes between a collapsed canary's first Ready pod and its rollback, against the information
# floor (issue 15; docs/judges.md): the demo's -99% orders release, FLOOR_ARGS="--runs 10".
.PHONY: bench-floor
bench-floor: venv
	$(TESTBED) up
	flock /tmp/guarded-testbed.lock $(PY) bench/floor.py $(FLOOR_ARGS)

# The operator's OCI image without a Docker engine (Debian's mmdebstrap and umoci; docs/image.md), in
# ~/.cache/guarded-rollouts/image/oci. Not part of `make test`. To run it as the in-cluster operator
# against the test bed: flock /tmp/guarded-testbed.lock hack/image.sh run
.PHONY: image
image: venv
	hack/image.sh build

clean: testbed-down
	rm -rf $(VENV) .pytest_cache

# N concurrent rollouts on the test bed: API requests and Prometheus queries per rollout per interval, CPU,
# memory, reconcile latency, time to Succeeded (bench/results/scale-N.json). SCALE_ARGS="--rollouts 50".
# Niced: the machine is shared; N >= 100 needs a machine of its own.
# SCALE_ARGS="--rollouts 50 --bad" adds one bad release (orders -99%) and reports its detection time; run
# SCALE_ARGS="--rollouts 0 --bad" for its time at N = 1. Kwok nodes hold 250 pods each: GUARDED_TESTBED_NODES.
.PHONY: bench-scale
bench-scale: venv
	$(TESTBED) up
	nice -n 10 $(PY) bench/scale.py $(SCALE_ARGS)

# The soak (not CI): N rollouts kept in flight, each ended one patched to a new release at once, the operator's RSS
# and CPU sampled every 10 s; bench/results/soak-N.json and docs/images/soak-N.png, with the RSS slope after
# --warmup (600 s). The issue's run, 2 hours at N = 335, needs a machine of its own and
# GUARDED_TESTBED_NODES=5; SOAK_ARGS="--rollouts 5 --soak 300 --warmup 60" for a short look.
SOAK_ARGS ?= --rollouts 335 --soak 7200
.PHONY: bench-soak
bench-soak: venv
	$(TESTBED) up
	nice -n 10 $(PY) bench/scale.py $(SOAK_ARGS)

# docs/images/scale-cost.png: cost against N from bench/results/scale-*.json (no cluster).
.PHONY: bench-scale-plot
bench-scale-plot: venv
	$(PY) bench/scale_plot.py
