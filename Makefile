# Everything runs inside a local virtual environment created on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)  ## run lint and the whole test suite
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)  ## run the benchmarks (tables on stdout, JSON under bench/results/)
	$(PY) -m bench.weight_matching
	$(PY) -m bench.batched_eval

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
