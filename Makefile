# Two commands for users: `make demo` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV := .venv
AIRFLOW_VENV := .venv-airflow
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LAKEHOUSE_HOME ?= $(CURDIR)/.lakehouse

.PHONY: setup demo test lint bench clean book airflow-test airflow-venv

# Our library's bytecode too (PYTHONDONTWRITEBYTECODE machines never cache it): each `lakehouse`
# command and fork server otherwise compiles it again.
setup: $(STAMP)
	$(BIN)/python -m compileall -q lib >/dev/null

$(STAMP): pyproject.toml
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/lakehouse kernels install >/dev/null
	touch $(STAMP)

demo: setup
	$(BIN)/lakehouse demo
	$(BIN)/lakehouse book

book: setup
	$(BIN)/lakehouse book

lint: setup
	$(BIN)/ruff check lib tests
	$(BIN)/lint-imports --no-cache --no-logo

test: setup lint
	$(BIN)/lakehouse onboard --check
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 --nbmake-kernel=lakehouse-warm pipeline_notebooks ops_notebooks
	$(MAKE) airflow-test

# Airflow and its provider live in their own venv, so their pins cannot break the project's.
$(AIRFLOW_VENV)/.installed: airflow/requirements.txt | $(STAMP)
	test -x $(AIRFLOW_VENV)/bin/python || $(BIN)/uv venv $(AIRFLOW_VENV) --python $(PYTHON)
	$(BIN)/uv pip install --python $(AIRFLOW_VENV)/bin/python --quiet --compile-bytecode -r airflow/requirements.txt
	touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed

airflow-test: setup $(AIRFLOW_VENV)/.installed
	h=$$(mktemp -d); AIRFLOW_HOME=$$h LAKEHOUSE_MAIN_PYTHON=$(CURDIR)/$(BIN)/python \
	  $(AIRFLOW_VENV)/bin/python -m pytest -c airflow/pytest.ini airflow/tests; rc=$$?; rm -rf $$h; exit $$rc

bench: setup
	$(BIN)/python tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) .lakehouse _build
