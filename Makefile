# The two commands a newcomer needs: `make demo` and `make test`; `make up` runs the service.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Where `make up` keeps its data between runs.
STACK_DIR ?= var/stack

.PHONY: install lock demo up manage send lint docs docs-serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The exact versions and hashes of requirements/lock.txt (the service's dependencies and
# the test extra's), then the project itself as an editable install without dependencies;
# `pip check` then fails when pyproject.toml wants something the lock lacks.
$(STAMP): $(BIN)/python pyproject.toml requirements/lock.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python -m pip check >/dev/null || { $(BIN)/python -m pip check; \
		echo "requirements/lock.txt does not match pyproject.toml: run make lock"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

# Refresh the lock files after a change to the dependencies in pyproject.toml: versions
# already locked are kept where they still fit; `make lock ARGS=--upgrade` moves every
# package to its newest allowed version. requirements/lock.txt is what `make install`
# and CI install, requirements/runtime.lock (the same versions, no test tools) the image.
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'uv>=0.9,<1'
	$(BIN)/uv pip compile pyproject.toml --universal --generate-hashes --custom-compile-command "make lock" --extra test \
		-o requirements/lock.txt $(ARGS)
	$(BIN)/uv pip compile pyproject.toml --universal --generate-hashes --custom-compile-command "make lock" -c requirements/lock.txt \
		-o requirements/runtime.lock $(ARGS)

demo: $(STAMP)
	$(BIN)/python -m devtools.demo

up: $(STAMP)
	$(BIN)/python -m devtools.stack --data-dir $(STACK_DIR) $(ARGS)

# Any manage.py command against the running stack, with the settings `make up` wrote to
# $(STACK_DIR)/env: `make manage ARGS="dlq list"`, `make manage ARGS="pipeline_stats --json"`.
manage: $(STAMP)
	@test -f "$(abspath $(STACK_DIR))/env" || { echo "$(STACK_DIR)/env not found: start the stack with make up first"; exit 1; }
	@. "$(abspath $(STACK_DIR))/env" && $(BIN)/python manage.py $(ARGS)

# The sample stream into the running stack: signed webhook deliveries to its web process.
send: $(STAMP)
	@test -f "$(abspath $(STACK_DIR))/env" || { echo "$(STACK_DIR)/env not found: start the stack with make up first"; exit 1; }
	@. "$(abspath $(STACK_DIR))/env" && $(BIN)/python -m devtools.send $(ARGS)

# Static checks, configured in pyproject.toml: the import contracts ([tool.importlinter]:
# config <- core <- (leads | dlq) <- whatsapp, no runtime package imports devtools), ruff's
# lint and format ([tool.ruff]) and mypy ([tool.mypy]). mypy's Django plugin imports the
# settings, which want a SECRET_KEY unless DEBUG is on: DEBUG=1 lets them load here.
# `ruff format .` and `ruff check --fix .` fix most of what the ruff lines report.
# Last, the docs site's strict build (below): a broken link or anchor, or a page the nav
# names that nobody wrote, fails lint rather than a reader (the file paths the pages name in
# code spans are checked by tests/unit/docs/test_paths.py).
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 $(BIN)/mypy
	$(MKDOCS) build --strict

# The docs site (mkdocs.yml) into var/site/: the pages under docs/, plus the API reference
# (one page per module, from the docstrings) and the settings reference (from
# config/settings.py), both generated as it builds. --strict turns every warning (a broken
# link or anchor, a page the nav names that does not exist) into a failure. Material prints
# a notice about MkDocs 2 on every build unless told not to. Never --quiet: it hides the
# warnings --strict counts, and the build then passes whatever is broken.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

docs: $(STAMP)
	$(MKDOCS) build --strict
	@echo "docs: open var/site/index.html"

# The same with live reload while writing (a warning is printed, not fatal), on a port
# `make up` does not use; the hooks also watch the runtime packages' docstrings.
docs-serve: $(STAMP)
	$(MKDOCS) serve --dev-addr 127.0.0.1:8001

# The suite is bound by the CPU its pipelines use, but many of its tests mostly wait (a
# redelivery after a SIGKILL, a retry's countdown, a restart): on two cores, more workers
# than cores fill that time (8m54 with four against 9m44 with three, on one quiet machine;
# five against four on one busy machine in one hour: 11m22 against 12m56).
TEST_WORKERS ?= 5

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 --durations=20 $(PYTEST_ARGS)

# The pipeline against bare Celery, in one run (tests/benchmarks/bench.py):
# `make bench ARGS="--messages 20000"` for a long run.
bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.bench $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
