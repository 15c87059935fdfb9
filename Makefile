# One idempotent entry point for the environment: `make setup` builds .venv once and only redoes
# work when pyproject.toml or the Detectron2 install script change.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.workbench-setup

.PHONY: setup demo test test-fast lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml tools/install_detectron2.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "setuptools>=77.0.3,<82" wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) tools/install_detectron2.py
	touch $(STAMP)

# The main job: the whole step pipeline (convert, check, split, train, evaluate, predict) on the
# demo data as the six step notebooks run in batch; executed notebooks and every step's files in
# runs/demo. `workbench demo --output DIR` (without --notebooks) runs the same steps as Python calls.
demo: setup
	$(VENV)/bin/workbench demo --notebooks --output runs/demo

# The test suite (slow tests included), as CI runs it.
test: setup
	$(PY) -m pytest -q tests

# ruff: the lint rules and the complexity ceiling of pyproject.toml on everything; the formatter's
# check on the code already formatted (the engine, the pipeline, tools; a file joins FORMATTED when
# it is next reworked, so that reformatting never hides a change in a diff).
FORMATTED := workbench/engine workbench/pipeline tools tests/test_contract.py \
	workbench/models/mask_rtdetr/solver.py workbench/models/mask_rtdetr/weights.py \
	workbench/models/mask_rtdetr/names.py workbench/models/detectron2/names.py
lint: setup
	$(VENV)/bin/ruff check workbench tests benchmarks tools
	$(VENV)/bin/ruff format --check $(FORMATTED)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

clean-venv:
	rm -rf $(VENV)
