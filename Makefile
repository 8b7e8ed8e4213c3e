# The README's two commands: `make demo` (main job) and `make test` (the whole suite).
# Both create or reuse .venv with the pinned versions in requirements/constraints.txt.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robust-mix-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_EXAMPLES ?= 50

.PHONY: venv data demo test cards lock clean

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

demo: venv data
	$(BIN)/robust-mix list
	$(BIN)/robust-mix demo --n-examples $(DEMO_EXAMPLES)

test: venv data
	$(BIN)/python -m pytest -q -rs

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
