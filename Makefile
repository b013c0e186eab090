# Two commands for users: `make demo` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LAKEHOUSE_HOME ?= $(CURDIR)/.lakehouse

.PHONY: setup demo test lint bench clean book

setup: $(STAMP)

$(STAMP): pyproject.toml
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: setup
	$(BIN)/lakehouse demo
	$(BIN)/lakehouse book

book: setup
	$(BIN)/lakehouse book

lint: setup
	$(BIN)/ruff check lib tests

test: setup lint
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 pipeline_notebooks ops_notebooks

bench: setup
	$(BIN)/python tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) .lakehouse _build
