# The README's two commands: `make demo` and `make test`. Both create the virtual environment
# and install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint lock clean

# The runtime dependencies at the image's exact versions first (requirements.lock, hashes
# checked), then the project and its test tools: the tests run what the image runs.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
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

# requirements.lock: the image's exact runtime dependencies (the postgres extra included) and
# the build-system's setuptools/wheel, each with its sha256 hashes, for Python 3.11 on Linux.
# Run after changing pyproject.toml's dependencies; tests/test_lockfile.py says when it is due.
# uv is a tool of this target only, never a dependency of the project.
lock: $(STAMP)
	$(BIN)/pip install --quiet uv
	printf 'setuptools>=68\nwheel\n' > $(VENV)/build-system.in
	$(BIN)/uv pip compile pyproject.toml $(VENV)/build-system.in --extra postgres \
	  --generate-hashes --no-annotate --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock' \
	  --output-file requirements.lock

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis
