# badge-bridge: the README's commands. Each target creates .venv if missing and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= site.example.toml
PORT   ?=
ARGS   ?= --help

DEBIAN_PACKAGES := mosquitto chromium fonts-dejavu-core poppler-utils

.PHONY: demo cli test lint bench fuzz clean system-packages

## Debian packages the demo and the tests run for real (a broker); installed only where missing.
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# face-recognition requires `dlib` (a long source build); dlib-bin, installed above, provides the same module.
	$(PY) -m pip install -q --no-deps face-recognition==1.3.0
	touch $(STAMP)

NODE_STAMP := node_modules/.package-lock.json

## axe-core for the accessibility tests, from the npm registry at the version package-lock.json pins (npm ci);
## npm itself from Debian (nodejs, npm) where the machine has none.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

## make demo: build the demo site database from site.example.toml and run the bridge on it.
## PORT=8090: the console's port (PORT=0: any free one); CONFIG=other.toml: another site file.
demo: system-packages $(STAMP)
	$(PY) -m badge_bridge.demo --config $(CONFIG) $(if $(PORT),--port $(PORT))

## make cli ARGS="audit verify": the badge-bridge command on the demo's site file (it is .venv/bin/badge-bridge).
cli: $(STAMP)
	$(VENV)/bin/badge-bridge -c $(CONFIG) $(ARGS)

## make test: the linters, then the whole suite, on SQLite and on a throw-away PostgreSQL database, one worker per
## core (pytest-xdist; tests marked with the same xdist_group share a worker).
test: system-packages $(STAMP) $(NODE_STAMP) lint
	$(PY) -m pytest -n auto --dist loadgroup

## make lint: ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and mypy with the pydantic
## plugin over the four packages; their settings are in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## make bench: every benchmark under bench/, each printing one JSON object.
bench: system-packages $(STAMP)
	@for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

FUZZ_STAMP := $(VENV)/.fuzz-installed
FUZZ_ARGS ?=

# atheris only as a wheel: never compiled here (it would need clang and libFuzzer).
$(FUZZ_STAMP): $(STAMP)
	$(PY) -m pip install -q --only-binary atheris -e '.[test,fuzz]'
	touch $(FUZZ_STAMP)

## make fuzz: hostile MQTT payloads and RS-485 bytes against the bridge process, then the coverage-guided
## fuzzer over the parsers (docs/fuzz.md); not part of make test. FUZZ_ARGS="--quick" for a smoke check.
fuzz: system-packages $(FUZZ_STAMP)
	$(PY) -m fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) var/ .pytest_cache build *.egg-info node_modules
