# Two commands on a fresh machine: `make run` and `make test` (`make run-cluster`: two nodes on PostgreSQL).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run run-cluster test lint format unit typecheck bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m deploy.devrun

# Two engine nodes and a gateway on a throwaway PostgreSQL (needs the Debian package postgresql).
run-cluster: $(STAMP)
	$(BIN)/python -m deploy.devrun --cluster

# CI (.ci/run) calls `make test`: a lint or type error fails it before any test runs.
test: lint
	$(BIN)/python -m pytest -q

# ruff (format, import order, lint) and mypy --strict over everything we ship and test.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# Rewrite the tree in the house format and import order (then `make lint` to see what remains).
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --select I --fix .

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

fuzz: $(STAMP)
	FUZZ_MAX_EXAMPLES=2000 $(BIN)/python -m pytest -q tests/fuzz

clean:
	rm -rf $(VENV) var test-artifacts build dist
