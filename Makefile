# Developer and CI entry points. The engine is scripts/engine.sh (docs/engine.md).
# Works on a fresh Debian 12 machine as root: missing Debian packages are installed on demand.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ENGINE := bash scripts/engine.sh
PYTEST_ARGS ?=

# `$(WITH_ENGINE)` starts the engine (idempotent) and exports the DOCKER_HOST it prints last.
WITH_ENGINE = out=$$($(ENGINE) up | tail -n 1); \
  case "$$out" in DOCKER_HOST=?*) export "$$out" ;; \
  *) echo "make: engine.sh up printed no DOCKER_HOST" >&2; exit 1 ;; esac; \
  echo "make: $$out" >&2;

.PHONY: help install engine-up engine-down engine-status run test lint bench clean
.PHONY: image image-lock qemu-up qemu-down qemu-test

help:
	@echo "make install        create $(VENV) and install the project with its dev tools"
	@echo "make engine-up      start the private Docker engine and the registry on 127.0.0.1:5000"
	@echo "make engine-down    stop them"
	@echo "make engine-status  say what runs"
	@echo "make run            run the supervisor in local mode with fixtures/targets/demo.json"
	@echo "make test           the whole test suite against the real engine"
	@echo "make lint           ruff, mypy, import-linter"
	@echo "make bench          the benchmarks (bench/run.py)"
	@echo "make clean          engine-down, then remove .state .run $(VENV) and caches"
	@echo "make image          the device image build/image/qemux86-64.img (docs/device-image.md)"
	@echo "make qemu-up        boot it in QEMU; prints SUPERVISOR=http://127.0.0.1:<port>"
	@echo "make qemu-down      power the VM off"
	@echo "make qemu-test      end-to-end tests on the image in QEMU (tests/image, ~15 min)"

install: $(STAMP)

# The stamp makes a second `make install` instant until pyproject.toml changes.
$(STAMP): pyproject.toml
	@if ! $(BIN)/python -m pip --version >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  echo "make: creating $(VENV) with $(PYTHON)" >&2; \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    echo "make: $(PYTHON) -m venv failed: installing python3-venv" >&2; \
	    apt-get update -q </dev/null; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv </dev/null; \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' </dev/null
	@touch $@

engine-up:
	@$(ENGINE) up

engine-down:
	@$(ENGINE) down

engine-status:
	@$(ENGINE) status

run: install
	@$(WITH_ENGINE) \
	mkdir -p .run/data .run/boot .run/state .run/locks; \
	exec $(BIN)/balena-supervisor run --data-dir .run/data --boot-dir .run/boot \
	  --state-dir .run/state --locks-dir .run/locks --listen 0.0.0.0:48484 \
	  --local-target fixtures/targets/demo.json --host-actions dry-run --firewall dry-run

# pytest's exit 5 (no test collected) is a failure here, not a pass.
test: install
	@$(WITH_ENGINE) \
	rc=0; CI="$${CI:-}" $(BIN)/pytest -q $(PYTEST_ARGS) </dev/null || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "make: pytest ran no test: failing" >&2; exit 1; fi; \
	exit "$$rc"

# Every linter runs, so one report shows all that is wrong.
lint: install
	@rc=0; \
	echo "--- ruff check" >&2; $(BIN)/ruff check . || rc=1; \
	echo "--- mypy" >&2; $(BIN)/mypy || rc=1; \
	echo "--- lint-imports" >&2; $(BIN)/lint-imports || rc=1; \
	exit "$$rc"

bench: install
	@$(WITH_ENGINE) \
	$(BIN)/python bench/run.py

clean:
	-@$(ENGINE) down
	@if grep -qF " $(CURDIR)/.state/" /proc/self/mountinfo; then \
	  echo "make: mounts remain under .state (see scripts/engine.sh status); not removing it" >&2; \
	  exit 1; \
	fi
	rm -rf .state .run $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis \
	  .import_linter_cache build *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# ---- the device image (docs/device-image.md). The engine gives the preloaded app's images.
image: install
	@$(WITH_ENGINE) bash image/build.sh

# Rewrites image/requirements.txt (the image's pinned dependencies) from pyproject.toml.
image-lock: install
	@bash image/build.sh lock

qemu-up: image
	@python3 image/vm.py up

qemu-down:
	@python3 image/vm.py down

# Boots its own VM (a fresh device) and powers it off at the end; QEMU_TEST=1 lets pytest
# collect tests/image, which `make test` leaves out.
qemu-test: image
	@rc=0; QEMU_TEST=1 CI="$${CI:-}" $(BIN)/pytest -q -p no:cacheprovider tests/image $(PYTEST_ARGS) </dev/null || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "make: pytest ran no test: failing" >&2; exit 1; fi; \
	exit "$$rc"
