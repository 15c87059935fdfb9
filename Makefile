# One idempotent entry point for the environment: `make setup` builds .venv once and only redoes
# work when pyproject.toml or the Detectron2 install script change.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.workbench-setup

.PHONY: setup demo test test-fast clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml workbench/install_detectron2.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "setuptools>=77.0.3,<82" wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) workbench/install_detectron2.py
	touch $(STAMP)

# The main job: the whole step pipeline (convert, check, split, train, evaluate, predict) on the
# demo data as the six step notebooks run in batch; executed notebooks and every step's files in
# runs/demo. `workbench demo --output DIR` (without --notebooks) runs the same steps as Python calls.
demo: setup
	$(VENV)/bin/workbench demo --notebooks --output runs/demo

# The test suite (slow tests included), as CI runs it.
test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

clean-venv:
	rm -rf $(VENV)
