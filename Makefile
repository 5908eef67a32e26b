# `make check` runs what CI runs (the README test command) plus the linters.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: check lint test venv bench

venv:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q -e '.[test]'

lint: venv
	$(VENV)/bin/ruff check agh aghd tests bench contrib
	$(VENV)/bin/ruff format --check agh aghd tests bench contrib
	$(VENV)/bin/mypy

test: venv
	$(PY) -m pytest -q

check: lint test

bench: venv
	$(PY) bench/claim_complete.py
