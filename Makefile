# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   compare BP and greedy local learning on MNIST-1D (table + compare.png)
#   make test   run the test suite
# torch==2.13.0 is installed first and explicitly: it is the CPU build that installs from
# local disk; any other torch request would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/locallearn compare --rules bp,greedy --json compare.json --plot compare.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs compare.json compare.png
