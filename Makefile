# The README's two commands: `make run` (embedded, no servers) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# checkov's pins clash with pytest's: it lives in a venv of its own (pyproject's deploy-lint group).
TOOLS := $(VENV)/tools
TOOLS_INSTALLED := $(TOOLS)/.installed

.PHONY: run test test-unit test-integration test-e2e lint format smoke chaos chaos-long chaos-rabbitmq bench bench-quick bench-rush clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

$(TOOLS_INSTALLED): pyproject.toml $(INSTALLED)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet --group deploy-lint
	touch $(TOOLS_INSTALLED)

## Run the whole system on SQLite with a server-less broker: API on :8088, relay, workers.
run: $(INSTALLED)
	$(BIN)/onlinestudy run

## Every test: unit (fakes), integration (PostgreSQL), end to end (Redis + real workers,
## Flower on Redis and RabbitMQ, /docs in headless Chromium), after the lint, the layers
## (import-linter) and the types (mypy).
test: $(INSTALLED) $(TOOLS_INSTALLED)
	scripts/ensure-services.sh --rabbitmq
	scripts/ensure-tools.sh
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q

test-unit: $(INSTALLED)
	$(BIN)/pytest -q tests/unit

test-integration: $(INSTALLED)
	scripts/ensure-services.sh
	$(BIN)/pytest -q tests/integration

test-e2e: $(INSTALLED)
	scripts/ensure-services.sh --rabbitmq
	scripts/ensure-tools.sh
	$(BIN)/pytest -q tests/e2e

## Start the embedded default, order a course through the API, see My page, stop it.
smoke: $(INSTALLED)
	scripts/smoke-embedded.sh

## Chaos suite (own PostgreSQL and Redis instances): faults under load, then a history check.
chaos: $(INSTALLED)
	scripts/ensure-services.sh --rabbitmq
	$(BIN)/python -m chaos --profile short --broker redis

chaos-rabbitmq: $(INSTALLED)
	scripts/ensure-services.sh --rabbitmq
	$(BIN)/python -m chaos --profile short --broker rabbitmq

chaos-long: $(INSTALLED)
	scripts/ensure-services.sh --rabbitmq
	$(BIN)/python -m chaos --profile long --broker redis

## Benchmark against same-run baselines; writes var/bench/latest.json. HISTORY=1M measures
## again on top of that many preloaded orders of history.
bench: $(INSTALLED)
	scripts/ensure-services.sh
	$(BIN)/python -m bench $(if $(HISTORY),--history $(HISTORY))

bench-quick: $(INSTALLED)
	scripts/ensure-services.sh
	$(BIN)/python -m bench --quick

## The opening rush alone, with the POST /orders rate it is compared with (bench/rush.py).
bench-rush: $(INSTALLED)
	scripts/ensure-services.sh
	$(BIN)/python -m bench --phases post,rush

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
