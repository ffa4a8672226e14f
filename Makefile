# The README's two commands: `make demo` and `make test`. Both create the virtual environment
# and install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/huimin-worker demo

# the AsyncAPI document is validated with the official parser (tests/test_contracts.py)
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

test: $(STAMP) node_modules/.package-lock.json
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis
