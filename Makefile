# The README's two commands: `make demo` (main job) and `make test` (the whole suite).
# Both create or reuse .venv with the pinned versions in requirements/constraints.txt.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robust-mix-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
# empty: robust-mix demo's own default N (robust_mix/cli/demo.py DEFAULT_EXAMPLES)
DEMO_EXAMPLES ?=

.PHONY: venv data chromium demo test cards site lock clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST ships as a Debian package; the embedded default model is evaluated on it.
data:
	@if [ -f $(FMNIST_DIR)/t10k-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (files land in $(FMNIST_DIR)),"; \
		echo "or set ROBUST_MIX_DATA to a folder holding the four original *-ubyte.gz files."; exit 1; \
	fi

# The leaderboard site's browser test drives Debian's headless Chromium; without it that test is
# skipped (and says so), the rest of the suite runs.
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$ROBUST_MIX_CHROMIUM" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || (apt-get update -q && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)) >/dev/null \
		|| echo "Chromium could not be installed: the leaderboard's browser test will be skipped"; \
	else \
		echo "Chromium is missing: the leaderboard's browser test will be skipped (sudo apt-get install chromium)"; \
	fi

demo: venv data
	$(BIN)/robust-mix list
	$(BIN)/robust-mix demo $(if $(DEMO_EXAMPLES),--n-examples $(DEMO_EXAMPLES))

test: venv data chromium
	$(BIN)/python -m pytest -q -rs

# The leaderboard site of the main job's reports (after `make demo`); opens from site/index.html.
site: venv
	$(BIN)/robust-mix leaderboard runs/demo --out site

# Re-render model_cards/ from the registered entries' configs (and benchmarks/reports/NAME.json).
cards: venv
	$(BIN)/robust-mix card --all --out-dir model_cards

# Re-resolve the pinned set (needs the registries); commit the result.
lock:
	rm -rf /tmp/robust-mix-lock && $(PYTHON) -m venv /tmp/robust-mix-lock
	/tmp/robust-mix-lock/bin/pip install -q -e '.[test]'
	/tmp/robust-mix-lock/bin/pip freeze --exclude-editable | grep -v '^robust' > requirements/constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
