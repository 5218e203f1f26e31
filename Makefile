# Each target creates the virtualenv it needs, so a fresh clone needs only `make demo` / `make test`.
# `demo` installs the package alone; the test targets add the extras they need.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q
# The core suite: everything but the Ray cluster and the browser (CI narrows it further on
# the Pythons other than the main one: MARKS="not ray and not browser and not races").
MARKS ?= not ray and not browser
CORE := -m "$(MARKS)"

.PHONY: demo test test-core lint typecheck bench docs browser-deps clean

$(BIN)/.base: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(BIN)/.test: $(BIN)/.base
	$(PIP) -e '.[test,s3]'
	touch $@

$(BIN)/.dev: $(BIN)/.base
	$(PIP) -e '.[dev]'
	touch $@

demo: $(BIN)/.base
	$(BIN)/python -m runtime run examples/share_checkpoint.py

# The whole suite: core, S3 (moto), Ray cluster and browser tests.
test: $(BIN)/.dev browser-deps
	$(BIN)/python -m pytest

# The core suite alone (what CI runs on every Python 3.10-3.13).
test-core: $(BIN)/.test
	$(BIN)/python -m pytest $(CORE)

browser-deps:
	@bash .ci/browser-deps

lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.dev
	$(BIN)/mypy --strict cas_storage runtime

# Every benchmark the docs cite; each prints ratios against cp/rsync/raw s3fs from the same run.
bench: $(BIN)/.dev
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_dedup.py
	$(BIN)/python benchmarks/bench_kernelcopy.py
	$(BIN)/python benchmarks/bench_objects.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_runtime.py
	$(BIN)/python benchmarks/bench_runtime.py --executor ray
	$(BIN)/python benchmarks/bench_drive.py
	$(BIN)/python benchmarks/bench_s3.py
	$(BIN)/python benchmarks/bench_serve.py

$(BIN)/.docs: $(BIN)/.dev
	$(PIP) -e '.[dev,docs]'
	touch $@

docs: $(BIN)/.docs
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .venv-* .cas .runtime
