# The two commands a researcher needs: `make run` (the app on the built-in demo) and `make test` (lint and
# types, then the suite). `make screenshots` regenerates the README's docs/screenshots/ through the newcomer
# browser test. Both set themselves up on a fresh machine: .venv, Debian packages, database schema.
SHELL := /bin/bash
BIN := .venv/bin
export ALIGNLAB_HOME ?= $(CURDIR)/data
export HF_HUB_OFFLINE := 1
PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: run test lint screenshots setup

setup:
	@scripts/ensure_venv.sh
	@$(BIN)/alignlab db upgrade

run: setup
	@scripts/ensure_system_deps.sh demo
	@$(BIN)/alignlab demo build
	$(BIN)/streamlit run app/server.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

lint:
	@scripts/ensure_venv.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint setup
	@scripts/ensure_system_deps.sh test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

screenshots: setup
	@scripts/ensure_system_deps.sh test
	ALIGNLAB_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest tests/app/browser/test_newcomer_browser.py
