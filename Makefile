# kingtask: `make run` starts the whole system, `make test` runs every test.
# Both create the virtualenv and install what they need on first use.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The example web API of the seed's rpc example runs beside kingtask, on 127.0.0.1:1323.
run: $(STAMP)
	$(BIN)/python examples/sum_api.py & trap 'kill $$! 2>/dev/null' EXIT INT TERM; \
	KINGTASK_BIN_PATH="$${KINGTASK_BIN_PATH:-examples/bin}" $(BIN)/kingtask run

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/timing.py
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) var build *.egg-info
