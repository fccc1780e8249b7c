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

# every benchmark, each rewriting its section of benchmarks/RESULTS.md (see benchmarks/README.md)
bench: install
	$(BIN)/python benchmarks/bench_loading.py
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_frozen_cache.py
	$(BIN)/python benchmarks/bench_hostile.py
	$(BIN)/python benchmarks/bench_speed.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_demo.py
	# the ablation rows (--levers, each one more whole comparison) are run apart: see benchmarks/README.md
	$(BIN)/python benchmarks/bench_accuracy.py --cli --datasets breastmnist --seeds 3 --levers
	$(BIN)/python benchmarks/bench_accuracy.py --cli --datasets organamnist --seeds 1 --levers

clean:
	rm -rf $(VENV) .medtl medtl-demo mlflow.db mlruns
