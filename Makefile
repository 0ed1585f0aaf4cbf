# The developer loop of warp_cache. `make help` lists the targets (from their `## ` comments).
# `make all` is the README's test command, scripts/test-all.sh, which CI runs; the other
# targets run one part of it, or a quicker subset (`make check`).
#
# Knobs: WARP_VENV and PYTHON as in scripts/venv.sh (the venv, default .venv, and the
# interpreter that creates it); PYTEST_ARGS (e.g. PYTEST_ARGS='-k shared -x'); BENCH_ARGS
# (e.g. BENCH_ARGS='--only memory'); the scripts' own knobs (WARP_FUZZ_SECONDS, ...) pass through.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := $(or $(WARP_VENV),$(CURDIR)/.venv)
VPY := $(VENV)/bin/python
# Made by scripts/venv.sh; redone when the requirements change (test-all.sh reinstalls them
# on every run, the fast loop only when they changed).
VENV_STAMP := $(VENV)/.warp-requirements
PYTEST_ARGS ?=
BENCH_ARGS ?=
# As in scripts/test-all.sh: pytest runs under Python's debug allocator.
PYTHONMALLOC ?= debug

.PHONY: help venv check test-py stubtest develop shuttle loom fuzz-smoke sim-smoke bench all

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-11s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(VENV_STAMP): tests/python/requirements.txt scripts/venv.sh
	WARP_VENV="$(VENV)" bash scripts/venv.sh
	touch "$@"

venv: $(VENV_STAMP) ## Create the venv (.venv, tests/python/requirements.txt) if missing or outdated

check: $(VENV_STAMP) ## fmt, clippy -D warnings, core and adapter unit tests, ruff, mypy (a couple of minutes)
	cargo fmt --all -- --check
	@# One ruff configuration (python/pyproject.toml) for the package, the tests and the benches.
	"$(VENV)/bin/ruff" check --config python/pyproject.toml python/python/warp_cache tests/python tests/typing benches
	"$(VENV)/bin/ruff" format --check python/python/warp_cache
	@# The stub with _async.py and _shared.py, then the __init__.py the stub hides.
	cd python && "$(VENV)/bin/mypy" && "$(VENV)/bin/mypy" python/warp_cache/__init__.py
	@# What users' type checkers see through the stubs, bound methods included.
	cd python && MYPYPATH=python "$(VENV)/bin/mypy" --strict ../tests/typing
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test -p warp-cache-core --lib
	bash scripts/test-adapter.sh

# maturin installs into the venv named by VIRTUAL_ENV; failpoints for the crash tests.
develop: $(VENV_STAMP)
	cd python && VIRTUAL_ENV="$(VENV)" PATH="$(VENV)/bin:$$PATH" "$(VENV)/bin/maturin" develop --release --features failpoints --quiet

test-py: develop ## Build the extension into the venv (release, failpoints) and run pytest
	PYTHONMALLOC=$(PYTHONMALLOC) "$(VPY)" -m pytest tests/python -q -p no:cacheprovider $(PYTEST_ARGS)

stubtest: develop ## Check the type stubs against the built module (mypy.stubtest)
	"$(VPY)" -m mypy.stubtest warp_cache

shuttle: ## Shuttle schedules of the stores' locking and the seqlock
	bash scripts/concurrency-tests.sh shuttle

loom: ## Loom model check of the seqlock's memory ordering
	bash scripts/concurrency-tests.sh loom

fuzz-smoke: ## Every cargo-fuzz target for WARP_FUZZ_SECONDS (60) each (nightly)
	bash scripts/fuzz-smoke.sh

sim-smoke: ## Multi-process simulator replays with faults (scripts/sim-smoke.sh)
	bash scripts/sim-smoke.sh

# Built without failpoints, as benches/bench.py asks; after `make test-py` this is a rebuild
# (and the reverse).
bench: $(VENV_STAMP) ## Build the extension (release, no failpoints), run benches/bench.py
	cd python && VIRTUAL_ENV="$(VENV)" PATH="$(VENV)/bin:$$PATH" "$(VENV)/bin/maturin" develop --release --quiet
	"$(VPY)" benches/bench.py $(BENCH_ARGS)

all: ## Every test: the README's test command, scripts/test-all.sh (CI runs it)
	bash scripts/test-all.sh
