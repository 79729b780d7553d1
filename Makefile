# Two set-up commands on a fresh machine: `make run` and `make test`. Each bootstraps .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HUB_PORT ?= 4222
HUB_HTTP_PORT ?= 8222

.PHONY: run test test-fast lint bench clean

$(BIN)/natsedge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[hub]'
	@touch $@

$(VENV)/.dev: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

run: $(BIN)/natsedge
	$(BIN)/natsedge hub -a 127.0.0.1 -p $(HUB_PORT) -m $(HUB_HTTP_PORT)

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow"

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	$(BIN)/natsedge bench --compare

clean:
	rm -rf $(VENV) build *.egg-info
