# Two commands for a newcomer: `make up` and `make test`. Both build the venv first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test test-fast lint typecheck bench model clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (l2loop needs Python >= 3.11; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The demo keeps its shared state (curated store, datasets, registry) in an embedded S3 server,
# as a deployment keeps it in a bucket; L2LOOP_EMBEDDED_S3=false keeps it in var/.
up: $(STAMP)
	L2LOOP_EMBEDDED_S3=$${L2LOOP_EMBEDDED_S3:-true} $(BIN)/l2loop up

# lint-imports checks the layer contract of docs/architecture.md (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -ra --durations=20

# The unit tests only: pure logic, no broker, Redis, server or child process; property suites
# draw a tenth of their examples (under a minute).
test-fast: $(STAMP)
	$(BIN)/pytest -m unit -q --hypothesis-profile=fast

bench: $(STAMP)
	$(BIN)/python bench/scoring_throughput.py

model: $(STAMP)
	$(BIN)/l2loop model build-lite
	$(BIN)/l2loop model build-fast

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache .hypothesis
