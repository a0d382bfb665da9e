# Two entry points for a fresh machine (each bootstraps .venv/ on first use):
#   make demo   index the sample photos in data/samples/ and open the search UI
#   make test   run the test suite (what CI runs)
PY := .venv/bin/python
SHELL := /bin/bash

.PHONY: venv demo test test-slow lint format bench

venv:
	@scripts/bootstrap.sh

demo: venv
	@scripts/demo.sh

test: venv
	@scripts/test-deps.sh
	$(PY) -m ruff check clipmodel indexer app tests bench
	.venv/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider --durations=20 -n 2 --dist loadfile

test-slow: venv
	$(PY) -m pytest -q -p no:cacheprovider -m slow -s

lint: venv
	$(PY) -m ruff check clipmodel indexer app tests bench
	.venv/bin/lint-imports

format: venv
	$(PY) -m ruff format clipmodel indexer app tests bench
