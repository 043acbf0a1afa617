# Set-up and entry points. `make demo` and `make test` work on a fresh machine (Debian/Ubuntu, Python 3.11+).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for the small CPU-only wheel on a machine without one
TORCH_INDEX ?=

# Every package at the version the suite last passed with (pyproject.toml keeps the ranges); `make lock` refreshes it
LOCK := requirements/lock.txt

.PHONY: setup setup-dev demo test lint lock

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) --upgrade pip
	# torch first and pinned: anything unpinned would pull the newest CUDA build (several GB).
	$(PIP) install -q -c $(LOCK) torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c $(LOCK) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev
	./scripts/install-system-deps.sh

demo: setup
	$(VENV)/bin/instructrl demo

test: setup-dev lint
	$(VENV)/bin/pytest -q

# Resolve every dependency anew within pyproject's ranges, write $(LOCK), run the suite against it
lock:
	./scripts/lock.sh

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy instructrl
