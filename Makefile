# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   compare BP and greedy local learning on MNIST-1D (table, compare.png and
#               report.html, the self-contained report of the runs)
#   make test   run the test suite (it installs Chromium, for the report's browser test,
#               when it is missing and make runs as root)
# torch==2.13.0 is installed first and explicitly: it is the CPU build that installs from
# local disk; any other torch request would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEMO_DIR := runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test lint clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/locallearn compare --rules bp,greedy --out $(DEMO_DIR) --json compare.json --plot compare.png
	$(BIN)/locallearn report $(DEMO_DIR) --out report.html

# Debian's chromium renders the HTML report in tests/test_report.py; without it (and
# without root to install it) those tests skip and say so.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the report's browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "could not install chromium: the browser tests will skip"; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs compare.json compare.png report.html
