# twisted-nsq: `make run` and `make test` bootstrap .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 2

.PHONY: run test check lint typecheck bench clean

$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip setuptools wheel
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m twisted_nsq.devcluster

test: $(STAMP)
	$(BIN)/python scripts/run_tests.py --jobs $(JOBS)

lint: $(STAMP)
	$(BIN)/ruff check twisted_nsq twisted tests scripts bench examples
	$(BIN)/ruff format --check twisted_nsq twisted tests scripts bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) _trial_temp .mypy_cache .ruff_cache
