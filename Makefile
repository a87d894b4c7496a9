# The README's first two commands: `make run` and `make test`. Both need only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench chaos install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

run: $(STAMP)  ## start the whole stack (PostgreSQL, Redis, Temporal, api, dispatcher, worker)
	$(BIN)/hookyard dev $(ARGS)

test: $(STAMP)  ## run the test suite against real PostgreSQL, Redis and Temporal
	$(BIN)/pytest $(ARGS)

lint: $(STAMP)  ## ruff, ruff format, mypy --strict and the import contract (layer order, pyproject)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.e2e

chaos: $(STAMP)  ## the fault ledger: bench/chaos.py against its own `hookyard dev` stack (ARGS=--events N ...)
	$(BIN)/python -m bench.chaos $(ARGS)

clean:
	rm -rf $(VENV) .hookyard build *.egg-info
