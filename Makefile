# Two commands do everything on a fresh machine:
#   make repro   create .venv if missing, then run the whole DVC pipeline on the embedded default
#   make test    create .venv if missing, then ruff (lint + format check) and every test (what CI runs: .ci/run)
# More:
#   make test-fast  unit tests only (deselects the `integration` and `slow` markers, see pytest.ini): no
#                   training, no servers, no dvc runs; 283 tests, measured 83-104 s wall on the shared 2-core
#                   machine with a training job on one core (once 355 s, when more jobs shared it)
#   make lint       ruff check . and ruff format --check . (rules: pyproject.toml [tool.ruff])
#   make format     ruff format . && ruff check --fix .
#   make pretrain   remake the tiny profile's starting weights (pretrain/dvc.yaml, about 1.3 h of one core) and copy
#                   them to models/pretrained/ (the gate writes them only when it passes; README "Model profiles")
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1
export DVC_NO_ANALYTICS ?= 1
# stage commands in dvc.yaml call `python`: make it the venv's
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test test-fast lint format lock mlflow-ui dag clean-runs pretrain predict

# the package itself is installed editable (pyproject.toml): code changes need no reinstall
$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=70.1"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.installed

repro: setup
	$(BIN)/dvc repro

pretrain: setup
	$(BIN)/dvc repro pretrain/dvc.yaml
	mkdir -p models/pretrained && cp pretrain/out/tiny_sam3.pt pretrain/out/tiny_sam3.json models/pretrained/

test: lint
	$(BIN)/python -m pytest -q tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration and not slow" tests

lint: setup
	$(BIN)/python -m ruff check . && $(BIN)/python -m ruff format --check .

format: setup
	$(BIN)/python -m ruff format . && $(BIN)/python -m ruff check --fix .

dag: setup
	$(BIN)/dvc dag

# make predict INPUT=camera.mp4 [ARGS="--classes screw defect --device cuda"]: overlay + results JSON
# in predictions/<input name>/ (python -m factory_sam3.predict --help)
predict: setup
	@test -n "$(INPUT)" || { echo 'usage: make predict INPUT=<image | folder | video> [ARGS="..."]' >&2; exit 2; }
	$(BIN)/python -m factory_sam3.predict "$(INPUT)" $(ARGS)

mlflow-ui: setup
	$(BIN)/python -m factory_sam3.tracking ui

lock:
	$(BIN)/python -m pip freeze --exclude factory-sam3 --exclude pip-tools --exclude build --exclude pyproject_hooks --exclude wheel > requirements.lock.tmp
	{ head -2 requirements.txt; cat requirements.lock.tmp; } > requirements.txt.new && mv requirements.txt.new requirements.txt && rm requirements.lock.tmp

clean-runs:
	rm -rf runs/
