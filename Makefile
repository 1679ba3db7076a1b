# Everything a developer runs, from a fresh clone with only Python 3.11+ installed:
#   make demo   the whole stack on this machine, one 10,000-recipient broadcast to the Twilio simulator
#   make test   the test suite (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set)
#   make lint   ruff and mypy
#   make bench  the benchmarks in bench/ (slow; prints figures)
#   make clean  remove caches and the local data folder (.bulksms); `make distclean` also removes .venv
#   make lock   regenerate requirements.lock / requirements-dev.lock from pyproject.toml (after changing it)
#
# Dependencies are installed from requirements-dev.lock (exact versions with hashes), then bulksms itself without
# its dependencies: every machine, CI and the Docker image (requirements.lock) run the same versions.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rewritten after each install: pip runs again only when pyproject.toml or the lock file is newer.
STAMP := $(VENV)/.installed-from-pyproject
LOCK_PYTHON := 3.11
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo up test lint format bench clean distclean lock

help:
	@echo "make demo   run the whole stack and a 10,000-recipient demo broadcast (simulated Twilio)"
	@echo "make up     run the whole stack in the foreground (bulksms up)"
	@echo "make test   run the test suite"
	@echo "make lint   ruff check, ruff format --check, mypy"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make clean  remove caches and .bulksms; make distclean also removes .venv"
	@echo "make lock   regenerate the lock files from pyproject.toml"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
		echo "bulksms needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>/dev/null || echo 'not found')."; \
		echo "Install Python 3.11+ and run again, or point make at it: make $(MAKECMDGOALS) PYTHON=/path/to/python3.12"; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements-dev.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/bulksms demo

up: install
	$(BIN)/bulksms up

# pytest exits 5 when it collected no tests: that is a failure too, said plainly.
test: install
	@status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing"; fi; \
	exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	@set -e; for script in bench/*.py; do \
		echo "==> $$script"; \
		$(BIN)/python "$$script"; \
	done

clean:
	rm -rf .bulksms .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# uv resolves once for every platform and Python >= 3.11 (--universal); hashes make pip refuse anything else.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/python -m uv pip compile pyproject.toml --universal --python-version $(LOCK_PYTHON) --generate-hashes \
		--quiet -o requirements.lock
	$(BIN)/python -m uv pip compile pyproject.toml --extra dev --universal --python-version $(LOCK_PYTHON) \
		--generate-hashes --quiet -o requirements-dev.lock
