# Two set-up commands: `make run` (the demo) and `make test` (linters, types, tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-gateway clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/zerogate demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The gevent tests run in their own process so gevent never meets the asyncio tests.
pytest: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/green
	$(BIN)/python -m pytest tests/green

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/rpc.py

# The HTTP gateway against a naive Flask + zerorpc gateway and bare Starlette (needs wrk, curl).
bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
