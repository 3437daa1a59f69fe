# Developer and CI entry points. `make test` brings the test services up and down around pytest.

SHELL := /bin/bash
VENV ?= .venv
PY_DIRS := src tests bench examples
SERVICES_ENV := $(or $(CPNET_DEV_DIR),.dev)/services.env

.PHONY: venv demo test bench lint format clean ui examples

# Create the venv if missing; (re)install only when pyproject.toml is newer than the stamp.
venv: $(VENV)/.installed ui

# The dashboard (ui/, Vite) is built into src/cpnet/ui/static/, which is committed, so that the
# package needs no node to install. Rebuilt here when its sources are newer and npm is present;
# a failed rebuild (no registry) keeps the committed build.
UI_SOURCES := $(shell find ui/src ui/public -type f 2>/dev/null) ui/index.html ui/package.json ui/package-lock.json ui/vite.config.ts
ui: src/cpnet/ui/static/index.html

src/cpnet/ui/static/index.html: $(UI_SOURCES)
	@if command -v npm >/dev/null; then \
		(cd ui && npm ci --no-audit --no-fund && npm run build) || \
		echo "make ui: the dashboard's rebuild failed; keeping the committed build" >&2; \
	else echo "make ui: npm not found; keeping the committed build of the dashboard" >&2; fi
	test ! -f $@ || touch $@

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -e '.[dev]'
	# py-tes 1.1 (TES 1.1) beside the 0.4 that snakemake-executor-plugin-tes pins; tests load both
	$(VENV)/bin/pip install --disable-pip-version-check --no-deps --upgrade --target $(VENV)/pytes11 'py-tes>=1.1'
	touch $@

demo: venv
	$(VENV)/bin/cpnet demo

# Services down even when pytest fails or is interrupted; the exit code is pytest's. The suite runs on
# PYTEST_WORKERS pytest-xdist workers (0: in this process); tests/conftest.py decides which tests
# share a worker (a file; every Slurm, Ray or network-namespace test).
PYTEST_WORKERS ?= 3
test: venv
	@trap 'scripts/services.sh down' EXIT; trap 'exit 130' INT TERM; \
	scripts/services.sh up || exit $$?; \
	set -a; source $(SERVICES_ENV); set +a; \
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# The first applications (examples/, docs/examples.md): each one builds its own throw-away network
# and checks its result; `make example-genomics` runs one, `make examples` all four.
EXAMPLES := ai-training weather-hpc genomics edge-inference
examples: $(addprefix example-,$(EXAMPLES))
example-%: venv
	$(VENV)/bin/python examples/$*/run.py

bench: venv
	$(VENV)/bin/python bench/run.py

lint: venv
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)

format: venv
	$(VENV)/bin/ruff check --fix $(PY_DIRS)
	$(VENV)/bin/ruff format $(PY_DIRS)

# Keeps the venv (rm -rf .venv to drop it too).
clean:
	-scripts/services.sh down
	rm -rf .dev build dist .pytest_cache .ruff_cache .hypothesis src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
