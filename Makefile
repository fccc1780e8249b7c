# One place for the commands README.md gives. Works on a fresh machine with no internet beyond
# the package registries: torch/torchvision come from the machine's own wheels.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH   = torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean

$(BIN)/medtl: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/medtl

install: $(BIN)/medtl

demo: install
	$(BIN)/medtl demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .medtl medtl-demo mlflow.db mlruns
