# Two entry points for a fresh machine: `make run` and `make test`.
# Both create and use a virtual environment in .venv on their own.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint format bench catalog openapi clean

# Reinstall whenever the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serves otrt on http://127.0.0.1:8000 on its embedded defaults (SQLite under ./var,
## in-process executor, auth off on loopback; no Docker, no external services).
run: $(STAMP)
	$(BIN)/otrt serve

## npm tools of the client tests (Redocly's linter, openapi-typescript, tsc), when npm is here.
CLIENT_TOOLS := tests/clients/ts/node_modules/.package-lock.json
$(CLIENT_TOOLS): tests/clients/ts/package-lock.json
	if command -v npm >/dev/null; then npm ci --prefix tests/clients/ts --no-audit --no-fund; fi

## Lints, then runs every test (tests/service needs PostgreSQL and Redis on 127.0.0.1), on
## two pytest-xdist workers: most tests wait on servers, workers and trainers they start.
test: $(STAMP) $(CLIENT_TOOLS) lint
	$(BIN)/python -m pytest -n 2 --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Measures the OT term's overhead on a training step (JSON in bench/out/).
bench: $(STAMP)
	mkdir -p bench/out
	$(BIN)/python bench/ot_overhead.py --out bench/out/ot_overhead.json

## Regenerates otrt_core/catalog.json (what the API reads without torch) from the registries.
catalog: $(STAMP)
	$(BIN)/otrt catalog --write

## Regenerates docs/openapi.json, the HTTP contract the API serves (a test fails on drift).
openapi: $(STAMP)
	$(BIN)/otrt openapi --write

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
