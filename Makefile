# The README's first two commands: `make run` and `make test`. Both need only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench chaos install clean chromium

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

run: $(STAMP)  ## start the whole stack (PostgreSQL, Redis, Temporal, api, dispatcher, worker)
	$(BIN)/hookyard dev $(ARGS)

test: $(STAMP) chromium  ## run the test suite against real PostgreSQL, Redis and Temporal
	$(BIN)/pytest $(ARGS)

# The console's browser tests drive Debian's Chromium; installed here when missing (needs root).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y --no-install-recommends chromium || \
	     (apt-get update && apt-get install -y --no-install-recommends chromium)) >/dev/null; \
	  else echo "chromium not found and not root: the console's browser tests will be skipped"; fi

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
