# The two commands of the README: `make bench` (set up + dvc repro on the offline default)
# and `make test` (set up + tests). Both create or reuse .venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install envs bench test browser clean-venv

install: $(VENV)/.installed

# torch first, pinned: an unpinned torch (or mace-torch before torch) pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/dvc config --local core.analytics false 2>/dev/null || true
	touch $@

# Model environments (models/*.yaml `environment:`): .venvs/<name>-<hash of pins>, venv + pip,
# torch==2.13.0 first; built once (~2 min each), a no-op when built. See xtalbench.models.env.
envs: install
	$(BIN)/python -m xtalbench.models.buildenv build

bench: install envs
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

test: install envs browser
	$(BIN)/pytest

# The site's end-to-end test drives Debian's chromium (never a browser download). Installed when
# missing and apt-get can (root); otherwise tests/test_site_browser.py skips, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	      || echo "make: could not install chromium; the browser test will be skipped"; \
	  else echo "make: chromium missing and apt-get unavailable; the browser test will be skipped"; fi; }

clean-venv:
	rm -rf $(VENV)
