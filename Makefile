# badge-bridge: the README's commands. Each target creates .venv if missing and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= site.example.toml

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

## make demo: build the demo site database from site.example.toml and run the bridge on it.
demo: $(STAMP)
	$(PY) -m badge_bridge.demo --config $(CONFIG)

## make test: the whole suite, on SQLite and on a throw-away PostgreSQL database.
test: $(STAMP)
	$(PY) -m pytest

## make bench: every benchmark under bench/, each printing one JSON object.
bench: $(STAMP)
	@for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var/ .pytest_cache build *.egg-info
