# greenfly: `make run` starts the broker on the embedded default config, `make test` runs
# the whole suite (installing what it needs first). Nothing else is needed on a fresh Debian.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint unit integration test-deps clean bench fuzz

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

# Coverage-guided fuzzing (atheris, libFuzzer's engine) of the decoder, the WebSocket frame
# reader and ClientProtocol through the in-process harness: FUZZ_RUNS inputs each from the
# corpus in tests/fuzz/corpus/<target>/ (tests/fuzz/README.md). New inputs go to
# build/fuzz/<target>/, a crashing one to build/fuzz/crash-<target>-*; `make test` runs a
# few thousand of each. 10^6 each took 18 minutes on one core of a loaded 2-core machine
# (decoder 36 s, ws_frames 544 s, protocol 480 s).
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= decoder ws_frames protocol

fuzz: $(VENV)/.test-installed
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p build/fuzz/$$target; \
		echo "== $$target: $(FUZZ_RUNS) inputs (log: build/fuzz/$$target.log)"; \
		start=$$(date +%s); \
		if ! $(BIN)/python tests/fuzz/run.py $$target -runs=$(FUZZ_RUNS) \
				-artifact_prefix=build/fuzz/crash-$$target- build/fuzz/$$target \
				tests/fuzz/corpus/$$target >build/fuzz/$$target.log 2>&1; then \
			tail -40 build/fuzz/$$target.log; exit 1; \
		fi; \
		grep -E '^#[0-9]+[[:space:]]+DONE' build/fuzz/$$target.log; \
		echo "   $$(( $$(date +%s) - start )) s"; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache build *.egg-info
