# `make demo` and `make test` each set up what they need first (a venv in .venv, the package, dev tools).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit test-faults lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/ytm --root ytm-demo demo

test: setup
	scripts/offline $(PY) -m pytest -p no:cacheprovider

# The fast tiers: unit and contract tests (fakeredis, SQLite, fake training children), about a minute.
test-unit: setup
	scripts/offline $(PY) -m pytest -p no:cacheprovider tests/unit tests/contract

# The fault suite (tests/faults, also part of `make test`): kills, SIGTERM, PostgreSQL restarts, simulated hosts.
test-faults: setup
	scripts/offline $(PY) -m pytest -p no:cacheprovider tests/faults

lint: setup
	$(VENV)/bin/ruff check yolo_task_manager tests benchmarks examples
	$(VENV)/bin/mypy yolo_task_manager
	$(VENV)/bin/lint-imports
