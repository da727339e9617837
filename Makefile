# vitrify: the two commands that set everything up on a fresh machine.
#   make demo  -> virtualenv, install, simulate movies of a real structure and process them automatically
#                 (mdcatch + schemer prep/proc -> 2D classes), report against the truth
#   make test  -> virtualenv, install, lint (ruff), check the import contracts (lint-imports),
#                 run the test suite (docstring examples included)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
DEMO_DIR ?= demo_project

.PHONY: venv install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[test,structures,web,webtest]" "$(TORCH_PIN)"
	touch $(STAMP)

venv install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vitrify demo --out $(DEMO_DIR) --overwrite

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/core.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build src/*.egg-info
