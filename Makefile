# The two commands a researcher needs: `make run` (the app on the built-in demo) and `make test`.
# Both set themselves up on a fresh machine: .venv, Debian packages, database schema.
SHELL := /bin/bash
BIN := .venv/bin
export ALIGNLAB_HOME ?= $(CURDIR)/data
export HF_HUB_OFFLINE := 1
PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: run test setup

setup:
	@scripts/ensure_venv.sh
	@$(BIN)/alignlab db upgrade

run: setup
	@scripts/ensure_system_deps.sh demo
	@$(BIN)/alignlab demo build
	$(BIN)/streamlit run app/server.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: setup
	@scripts/ensure_system_deps.sh test
	$(BIN)/python -m pytest $(PYTEST_ARGS)
