# greenfly: `make run` starts the broker on the embedded default config, `make test` runs
# the whole suite (installing what it needs first). Nothing else is needed on a fresh Debian.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint unit integration test-deps clean bench

run: $(VENV)/.installed
	$(BIN)/greenfly $(ARGS)

# The venv: Debian's python3 lacks ensurepip until python3-venv is installed.
$(VENV)/bin/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || tests/setup/install-system-packages.sh python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

test-deps: $(VENV)/.test-installed
	tests/setup/install-test-deps.sh

lint: $(VENV)/.test-installed
	$(BIN)/ruff check broker tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

# One pytest-xdist worker per CPU, each taking whole test files (a module-scoped broker starts
# once), in collection order: tests/conftest.py puts the files with slow tests first.
# `.venv/bin/pytest tests/x.py` still runs in one process; `make test WORKERS=0` runs it all so.
WORKERS ?= logical

test: test-deps lint
	$(BIN)/pytest --numprocesses $(WORKERS) --dist loadfile --no-loadscope-reorder

unit: $(VENV)/.test-installed
	$(BIN)/pytest tests/unit

# Benchmarks beside Mosquitto (not part of `make test`; about 10-15 minutes): builds the C
# load generator into bench/build/ and runs bench/run.py, which installs Mosquitto if missing.
# Narrow it with BENCH_ARGS, e.g. make bench BENCH_ARGS="--scenario latency --reps 5".
bench: $(VENV)/.installed
	$(MAKE) -C bench
	$(BIN)/python bench/run.py --no-build $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache build *.egg-info
