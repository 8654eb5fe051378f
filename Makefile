# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: install install-dev run test lint bench bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[apps]'
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

install-dev: $(DEVSTAMP)

run: install
	$(BIN)/watchkeeper serve

test: install-dev
	$(BIN)/python -m pytest tests

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

bench: install-dev
	$(BIN)/python bench/recovery.py

# What bench/serving.py, bench/idle_gap.py and bench/ab.py --concurrency need: wrk (Debian package) and the servers they compare with.
bench-deps: $(BIN)/python
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/pip install --quiet -e '.[bench]'

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
