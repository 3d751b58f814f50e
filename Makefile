# Two commands for a newcomer: `make run` (a node on 127.0.0.1:8765, data in
# ./.statebus) and `make test` (every check). Both set up what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test lint typecheck pytest jstest bench clean

$(STAMP): pyproject.toml setup.py statebus/_batchverify.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The Node suites (tests/js) use yjs, eventsource and braid-http from package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

run: $(STAMP)
	$(BIN)/python -m statebus serve --data .statebus

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests drive Debian's chromium (never Playwright's downloads).
$(CHROMIUM):
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

pytest: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest

jstest: $(STAMP) $(NODE_STAMP)
	STATEBUS_PYTHON=$(CURDIR)/$(BIN)/python node --test tests/js/

test: lint typecheck pytest jstest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache tests/artifacts
