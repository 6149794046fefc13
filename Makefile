# The README's commands live here. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.3
# the local copy beside the project when there is one, else where `captioner download` puts it
FLICKR8K_DIR ?= $(if $(wildcard ../shared/flickr8k/images),../shared/flickr8k,data/flickr8k)
CONFIG ?= configs/default.yaml
RUN ?= runs/default

.PHONY: setup browser data demo train evaluate best test test-fast bench lint lock clean

setup: $(VENV)/.installed

# every package at the exact version in requirements.lock (torch included: pip takes it from the machine's wheel
# cache where there is one), the person detector's from requirements-nodeps.lock (see there), then the project
# itself without dependencies
$(VENV)/.installed: requirements.lock requirements-nodeps.lock pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/pip install --quiet --requirement requirements.lock
	$(BIN)/pip install --quiet --no-deps --requirement requirements-nodeps.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

# refresh the pins: the newest releases that pyproject.toml's ranges allow (review the diff, run make test, commit)
lock:
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet pip-tools==7.6.2
	.lock-venv/bin/pip-compile --quiet --upgrade --extra dev --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock pyproject.toml

# Debian's Chromium for the browser test (Playwright drives it; no browser download). As root it is installed or
# upgraded every time, so a test run never depends on a browser an earlier run left behind.
browser:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null && chromium --version; \
	elif ! command -v chromium >/dev/null; then \
		echo "the browser test needs Debian's chromium (sudo apt-get install chromium); it is skipped without it" >&2; fi

# use the local Flickr8k copy, or download it from the public mirror
data: setup
	@if [ -d "$(FLICKR8K_DIR)/images" ]; then echo "using Flickr8k in $(FLICKR8K_DIR)"; \
	else $(BIN)/captioner download --out "$(FLICKR8K_DIR)"; fi
	$(BIN)/captioner prepare --data "$(FLICKR8K_DIR)" --config $(CONFIG)

train: data
	$(BIN)/captioner features --config $(CONFIG)
	$(BIN)/captioner train --config $(CONFIG) --run $(RUN)

# with the run's own decode settings (its config's decode: section)
evaluate:
	$(BIN)/captioner evaluate $(RUN) --split test

# the best preset end to end: features (skipped when cached), training, test score, and the wall time
best:
	@start=$$(date +%s); $(MAKE) --no-print-directory train evaluate CONFIG=configs/best.yaml RUN=runs/best && \
	echo "make best: $$(( $$(date +%s) - start )) s wall time"

demo: train evaluate
	$(BIN)/captioner caption $(RUN) $$(head -n 3 "$(FLICKR8K_DIR)/Flickr_8k.testImages.txt" | sed 's|^|$(FLICKR8K_DIR)/images/|') --n-best 3

# lint first: a style error fails CI as a test does
test: setup browser lint
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not integration"

bench: setup
	$(BIN)/python benchmarks/bench_inference.py $(RUN) --compare-grounding
	$(BIN)/python benchmarks/bench_server.py $(RUN) $(FLICKR8K_DIR)/images --seconds 10

lint: setup
	$(BIN)/ruff check src tests benchmarks docs scripts

clean:
	rm -rf $(VENV) .lock-venv build *.egg-info
