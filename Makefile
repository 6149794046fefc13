# The README's commands live here. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLICKR8K_DIR ?= ../shared/flickr8k
CONFIG ?= configs/default.yaml
RUN ?= runs/default

.PHONY: setup browser data demo train evaluate best test test-fast bench lint clean

setup: $(VENV)/.installed

# torch comes from the machine's local wheel cache (pip is capped at 2.14.1 there)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian's Chromium for the browser test (Playwright drives it; no browser download)
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

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

test: setup browser
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not integration"

bench: setup
	$(BIN)/python benchmarks/bench_inference.py $(RUN)
	$(BIN)/python benchmarks/bench_server.py $(RUN) $(FLICKR8K_DIR)/images --seconds 10

lint: setup
	$(BIN)/ruff check --select F src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
