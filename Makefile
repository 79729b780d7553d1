# Two set-up commands on a fresh machine: `make run` and `make test`. Each bootstraps .venv, and needs nothing else
# from the system but python3 (with venv) and make: the virtual boards of the deploy tests are Python PTYs (no socat),
# the TLS test certificates come from the `cryptography` package (no openssl).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HUB_PORT ?= 4222
HUB_HTTP_PORT ?= 8222
LEAF_PORT ?= 7422
DASHBOARD_PORT ?= 8080

.PHONY: run test test-fast lint bench clean

$(BIN)/natsedge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[hub,sim]'
	@touch $@

$(VENV)/.dev: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# Hub + 3 simulated MicroPython edges (a partition and a crash every 30 s) + dashboard; Ctrl-C stops all of it.
run: $(BIN)/natsedge
	$(BIN)/natsedge sim --scenario sim/scenarios/demo.json --hub hub --js auto --hub-port $(HUB_PORT) \
		--hub-http-port $(HUB_HTTP_PORT) --leaf-port $(LEAF_PORT) --dashboard 127.0.0.1:$(DASHBOARD_PORT)

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow"

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	$(BIN)/natsedge bench --compare

clean:
	rm -rf $(VENV) build *.egg-info
