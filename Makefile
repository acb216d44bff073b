# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
# Exactly Python 3.11: torch==2.13.0's CPU build and Django 5.2 are pinned for it.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint install chromium migrate

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "lorasite needs Python 3.11, but $(PYTHON) is $$($(PYTHON) --version 2>&1 || echo missing)."; \
	  echo "Install python3.11 (e.g. apt-get install python3.11-venv), or name it: make PYTHON=/path/to/python3.11 demo"; \
	  exit 1; }
	@echo "creating $(VENV) with $$($(PYTHON) --version) ($(PYTHON)); the install takes about 2 minutes and 1.6 GB"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: this exact CPU build is what the test machines install from local disk;
# any looser spec resolves to a multi-GB CUDA build.
# Top-level packages too: the editable install maps them when it runs, so a new one means installing again.
$(VENV)/.installed: pyproject.toml $(wildcard */__init__.py) | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

install: $(VENV)/.installed node_modules/.package-lock.json

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py seed_demo
	PORT=$(PORT) $(BIN)/python manage.py serve

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install -y chromium' (browser tests will skip)"; fi; }

lint: install
	$(BIN)/ruff check .

# Three pytest runs at once: the trainer and jobs tests; the rest of the portal's with the remote
# backends'; and the browser tests (Playwright's event loop cannot share a run with asyncio tests).
# Each run has its own test database and folders, and much of each waits on servers, workers and
# browsers rather than the CPU. The two run alongside print their output after the first; every log
# stays in test-output/.
REMOTE_TESTS := $(wildcard tests/training/test_replicate*.py tests/training/test_comfyui*.py tests/training/test_remote*.py)
test: install chromium lint
	@mkdir -p test-output
	@$(BIN)/python -m pytest tests/e2e > test-output/tests-browser.log 2>&1 & browser=$$!; \
	$(BIN)/python -m pytest -m "not browser" tests/datasets tests/foundation $(REMOTE_TESTS) \
	  > test-output/tests-portal.log 2>&1 & portal=$$!; \
	$(BIN)/python -m pytest -m "not browser" tests/training $(addprefix --ignore=,$(REMOTE_TESTS)); training=$$?; \
	wait $$portal; portal=$$?; wait $$browser; browser=$$?; \
	for part in portal browser; do \
	  echo "--- tests: $$part (run alongside; test-output/tests-$$part.log) ---"; cat test-output/tests-$$part.log; \
	done; \
	echo "exit codes: training $$training, portal $$portal, browser $$browser"; \
	exit $$(( training || portal || browser ))
