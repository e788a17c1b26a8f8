# The two commands: `make run` (install, migrate, serve with gunicorn; RELOAD=1 for development) and
# `make test` (install, lint, test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
STAMP := $(VENV)/.installed

.PHONY: install run test lint browser bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/crowdmarket db upgrade
	@echo ""
	@echo "crowdmarket is starting on http://$(HOST):$(PORT) under gunicorn  (API docs: http://$(HOST):$(PORT)/docs)"
	@echo "(make run RELOAD=1 restarts it whenever a source file changes)"
	@echo "Get a requester API token (printed once) in another terminal:"
	@echo "    $(BIN)/crowdmarket users create --role requester --email you@example.com"
	@echo "then call the API with: -H \"Authorization: Bearer <token>\"  (README: API walk-through)"
	@echo ""
	$(BIN)/crowdmarket run --host $(HOST) --port $(PORT)$(if $(RELOAD), --reload)

# ruff, then the layering contracts of pyproject.toml ([tool.importlinter]): a wrong import fails with the
# contract's name.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# Browser tests drive Debian's Chromium through Playwright; no test downloads a browser.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

# pytest-xdist, one process per core, each with its own database (tests/conftest.py); hypothesis' `ci` profile
# is derandomized, so a run never fails on an example the one before did not meet. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= auto
test: install lint browser
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: install
	$(BIN)/python benchmarks/import_items.py
	$(BIN)/python benchmarks/next_submit.py
	$(BIN)/python benchmarks/gold_timing.py
	$(BIN)/python benchmarks/flag_quality.py
	$(BIN)/python benchmarks/aggregation.py
	$(BIN)/python benchmarks/aggregation_runs.py
	$(BIN)/python benchmarks/ds_prior.py
	$(BIN)/python benchmarks/pay_cycle.py
	$(BIN)/python benchmarks/worker_ui.py
	$(BIN)/python benchmarks/platform_sync.py
	$(BIN)/python benchmarks/load.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
