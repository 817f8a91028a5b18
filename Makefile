# Everything runs inside .venv, created with pip on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export WANDB_MODE ?= offline
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: venv demo test lint format clean

$(BIN)/abaw: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/abaw

demo: venv
	$(BIN)/abaw demo

test: venv
	$(BIN)/python -m pytest -q -n auto

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
