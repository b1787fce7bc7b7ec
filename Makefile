# The two commands a newcomer needs: `make demo` and `make test`; `make up` runs the service.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Where `make up` keeps its data between runs.
STACK_DIR ?= var/stack

.PHONY: install demo up lint test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m devtools.demo

up: $(STAMP)
	$(BIN)/python -m devtools.stack --data-dir $(STACK_DIR)

# Static checks, configured in pyproject.toml: the import contracts ([tool.importlinter]:
# config <- core <- (leads | dlq) <- whatsapp, no runtime package imports devtools), ruff's
# lint and format ([tool.ruff]) and mypy ([tool.mypy]). mypy's Django plugin imports the
# settings, which want a SECRET_KEY unless DEBUG is on: DEBUG=1 lets them load here.
# `ruff format .` and `ruff check --fix .` fix most of what the ruff lines report.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 $(BIN)/mypy

# The suite is bound by the CPU its pipelines use; a third worker on two cores fills
# the time the others spend waiting on a restart, a redelivery or a breaker.
TEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 --durations=20 $(PYTEST_ARGS)

# The pipeline against bare Celery, in one run (tests/benchmarks/bench.py):
# `make bench ARGS="--messages 20000"` for a long run.
bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.bench $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
