VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean venv compose-test soak

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the virtual environment alone (what `run` and `test` create first)
venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/k2node run

lint: $(STAMP)
	$(VENV)/bin/ruff check k2node tests bench
	$(VENV)/bin/ruff format --check k2node tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

# docker compose for real (root, and Debian's docker.io, docker-compose, debootstrap)
compose-test: $(STAMP)
	$(PY) -m pytest -q -m compose tests/test_compose.py

# the long variants: 30 kill -9 of a node, the fuzz suite's 17,000 requests, 3,000 power
# cuts, and docker compose for real where it can run (some 15-20 minutes in all)
soak: $(STAMP)
	$(PY) -m pytest -q -m 'soak or compose'

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
