# Two set-up commands on a fresh machine: `make run` and `make test`. Each bootstraps .venv, and needs nothing else
# from the system but python3 (with venv) and make: the virtual boards of the deploy tests are Python PTYs (no socat),
# the TLS test certificates come from the `cryptography` package (no openssl). The one system package `make test`
# needs is a Chromium for the dashboard's browser test: installed here when missing (see `chromium` below).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HUB_PORT ?= 4222
HUB_HTTP_PORT ?= 8222
LEAF_PORT ?= 7422
DASHBOARD_PORT ?= 8080

.PHONY: run test test-fast lint bench clean chromium

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

# The dashboard's browser test (tests/sim/test_dashboard_browser.py) drives a headless Chromium over the DevTools
# protocol (no chromedriver, no browser download). $CHROMIUM names another Chromium or Chrome binary. When none is on
# PATH: as root with apt-get, install Debian's `chromium`; otherwise stop at once with the command to run.
chromium:
	@if [ -n "$$CHROMIUM" ]; then command -v "$$CHROMIUM" >/dev/null 2>&1 && exit 0; \
	  echo "make: CHROMIUM=$$CHROMIUM is not an executable" >&2; exit 1; fi; \
	command -v chromium >/dev/null 2>&1 && exit 0; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "make: installing Debian's chromium (the dashboard's browser test): apt-get install -y chromium"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && \
	    command -v chromium >/dev/null 2>&1 && exit 0; \
	  echo "make: installing chromium failed; run: apt-get install -y chromium" >&2; exit 1; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
	  echo "make test needs Chromium for the dashboard's browser test. Run:  sudo apt-get install -y chromium" >&2; \
	else echo "make test needs Chromium for the dashboard's browser test: install it (the package is" \
	  "chromium on most systems)" >&2; fi; \
	echo "(or set CHROMIUM=/path/to/chromium-or-chrome)" >&2; exit 1

# Two pytest-xdist workers (TEST_WORKERS=0: in pytest's own process): the tests mostly wait for servers and edges, so
# two halve the wall time on a 2-core machine. --dist loadfile keeps a file's tests, and its module fixtures, together.
TEST_WORKERS ?= 2

test: chromium $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	$(BIN)/natsedge bench --compare

clean:
	rm -rf $(VENV) build *.egg-info
