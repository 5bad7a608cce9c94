# The two commands of the README: `make demo` and `make test`. Each creates what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/.cei-demo
# Tests run in parallel processes: most of their time is spent waiting on nodes, servers and
# timeouts, not on the CPU. Each worker starts its own sshd, moto, RabbitMQ and PostgreSQL.
TEST_WORKERS ?= 3

.PHONY: demo test lint typecheck unit system-deps bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## demo: launch plans/three-tier.yml on the embedded local cloud, show it, tear it down
demo: $(STAMP)
	CEI_HOME=$(DEMO_HOME) scripts/demo.sh $(BIN)/cei

## test: lint, type-check and run every test against real parts (installs sshd and RabbitMQ when root)
test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q -rfEs -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check launchplan tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

system-deps:
	scripts/system-deps.sh

## bench: every benchmark in bench/ (figures only; RabbitMQ and PostgreSQL ones start private servers)
bench: $(STAMP)
	$(BIN)/python bench/bench_launch.py
	$(BIN)/python bench/bench_state.py
	$(BIN)/python bench/bench_transform.py --start-rabbitmq
	$(BIN)/python bench/bench_demo.py --start-rabbitmq
	$(BIN)/python bench/bench_elastic.py
	$(BIN)/python bench/bench_ec2_scale.py
	$(BIN)/python bench/bench_fanout.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .mypy_cache .ruff_cache *.egg-info
