# Vigil: `make demo` runs the main job, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Options of `vigil demo`, such as DEMO_ARGS="--limit 5000 --keep-running".
DEMO_ARGS ?=
# The database the tests own; it is dropped and made anew at the start of `make test`.
TEST_DB ?= vigil_test
export VIGIL_TEST_DATABASE := $(TEST_DB)

.PHONY: install services migrate test test-unit test-integration test-e2e lint format bench demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

services:
	./scripts/ensure-services.sh

migrate: install services
	$(BIN)/vigil migrate

test: install
	VIGIL_RESET_DATABASES=$(TEST_DB) VIGIL_DATABASES="vigil $(TEST_DB) vigil_bench" \
		./scripts/ensure-services.sh
	$(BIN)/pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: install services
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-e2e: install services
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/vigil schema check
	@if command -v docker-compose >/dev/null 2>&1; then docker-compose config -q && echo "docker-compose.yml is valid"; \
	 elif docker compose version >/dev/null 2>&1; then docker compose config -q && echo "docker-compose.yml is valid"; fi

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install services migrate
	$(BIN)/python -m bench

demo: install services migrate
	$(BIN)/vigil demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
