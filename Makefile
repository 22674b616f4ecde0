# The two commands a newcomer needs: `make test` (set up and run the whole suite) and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast lint proto check-proto clean demo bench bench-sinks

# setup.py and the C sources: the editable install compiles the accelerator in place, so a change rebuilds it.
$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/walstream/_native/*.[ch])
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Lint, types, stub freshness, then every test (unit and end-to-end on a real PostgreSQL).
test: setup lint
	$(PY) -m pytest

# The fast lane: lint, the unit tests and the end-to-end tests on PostgreSQL 15, without the slow ones
# (examples, faults, brokers). The full `make test` is what CI runs.
test-fast: setup lint
	$(PY) -m pytest -m "not slow" -k "not pg18"

lint: setup
	$(PY) -m ruff check src tests scripts bench
	$(PY) -m mypy
	$(PY) -m mypy --config-file tests/mypy.ini
	$(PY) scripts/gen_proto.py --check

# A live demo: throwaway PostgreSQL, a writer, walstream and a client printing the stream (Ctrl-C stops it).
# DEMO_ARGS passes options, e.g. make demo DEMO_ARGS='--port 50052 --duration 30'.
demo: setup
	$(PY) -m walstream demo $(DEMO_ARGS)

# walstream against pg_recvlogical and the peers (Debezium, pgstream: bench/peerbuild.py builds them; one that
# cannot be had is skipped with the reason) on a throwaway PostgreSQL 15 (about 30 min or more; not part of `make test`).
# Prints the table, writes bench/results/latest.json and the table in docs/benchmarks.md.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS='--runs 5 --workloads bulk'.
bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

# Broker sinks (NATS, Kafka) against pg_recvlogical: rows/s into the broker, acknowledged (a few minutes).
bench-sinks: setup
	$(PY) bench/sinks.py $(BENCH_ARGS)

proto: setup
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
