# The two commands of the README: `make bench` (set up + dvc repro on the offline default)
# and `make test` (set up + tests). Both create or reuse .venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install bench test clean-venv

install: $(VENV)/.installed

# torch first, pinned: an unpinned torch (or mace-torch before torch) pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/dvc config --local core.analytics false 2>/dev/null || true
	touch $@

bench: install
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

test: install
	$(BIN)/pytest

clean-venv:
	rm -rf $(VENV)
