# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
# requires-python is >= 3.11: the core's unit tests also run under Python 3.12, in a venv of
# the core alone (no torch, OpenCV or PyAV there). `python3.12` where it runs, else pyenv's;
# or name it: make test PYTHON312=/path/to/python3.12
PYTHON312 ?= $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; \
	do "$$p" -c '' 2>/dev/null && { echo "$$p"; break; }; done)
VENV312  := .venv312
STAMP312 := $(VENV312)/.installed
CORE_UNIT_TESTS := tests/unit/supervision tests/unit/scheduling tests/unit/protocol tests/unit/jobs
# Tools the deploy checks run, promtool (Debian `prometheus`) and systemd-analyze (`systemd`),
# and the browser the web UI's tests drive (Debian `chromium`, `chromium-driver`): installed
# when missing (apt-get needs root, as in CI); hadolint, kubernetes-validate and selenium come
# from PyPI with the dev extra.
TOOLSTAMP := $(VENV)/.test-tools

.PHONY: install install-dev test-tools run test lint bench bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[apps,ui]'
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(STAMP312): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "make: no python3.12 found; set PYTHON312=" >&2; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/pip install --quiet --upgrade pip
	$(VENV312)/bin/pip install --quiet -e . 'pytest>=8' 'pytest-timeout>=2.3' 'hypothesis>=6.100'
	touch $@

$(TOOLSTAMP): $(BIN)/python
	command -v promtool >/dev/null || (apt-get update && apt-get install -y --no-install-recommends prometheus)
	command -v systemd-analyze >/dev/null || (apt-get update && apt-get install -y --no-install-recommends systemd)
	command -v chromedriver >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)
	touch $@

install: $(STAMP)

test-tools: $(TOOLSTAMP)

install-dev: $(DEVSTAMP)

run: install
	$(BIN)/watchkeeper serve --ui

test: install-dev $(STAMP312) $(TOOLSTAMP)
	$(BIN)/python -m pytest tests
	$(VENV312)/bin/python -m pytest -q -p no:cacheprovider $(CORE_UNIT_TESTS)

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

bench: install-dev
	$(BIN)/python bench/recovery.py

# What bench/serving.py, bench/idle_gap.py and bench/ab.py --concurrency need: wrk (Debian package) and the servers they compare with;
# bench/ui_impact.py also drives Chromium with Selenium (the dev extra and the test tools).
bench-deps: $(DEVSTAMP) $(TOOLSTAMP)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/pip install --quiet -e '.[bench]'

clean:
	rm -rf $(VENV) $(VENV312) build *.egg-info src/*.egg-info
