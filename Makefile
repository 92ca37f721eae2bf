# Two entry points, both safe on a fresh Debian machine (root, Python 3.11):
#   make run   - set up, then run the daemon on the sample orders with a local Unbound
#   make test  - set up (venv, Debian resolvers), lint and type-check, then run the whole test suite
#   make unit  - the pure tests only (no Debian package, no process started): seconds
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Debian packages the tests drive for real: the four resolvers, an authoritative BIND,
# promtool (prometheus), dnsperf for the probe bench, chromium for the HTML report test,
# poppler-utils (pdftoppm) to render the report's A4 print to pixels.
DEBS   := unbound bind9 bind9-dnsutils knot-resolver pdns-recursor prometheus dnsperf chromium poppler-utils knot lua-cqueues
RUN_DEBS := unbound

.PHONY: run test unit lint bench debs run-debs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

debs:
	@./deploy/ensure-debs.sh $(DEBS)

run-debs:
	@./deploy/ensure-debs.sh $(RUN_DEBS)

test: debs lint
	$(PY) -m pytest -q

unit: $(VENV)/.installed
	$(PY) -m pytest -q -m "not integration" --hypothesis-profile=unit

# ruff, then mypy (strict, configured in pyproject.toml) on the package.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check blocker tests bench
	$(VENV)/bin/mypy

run: run-debs $(VENV)/.installed
	$(PY) deploy/local-run.py

bench: debs $(VENV)/.installed
	$(PY) bench/render.py
	$(PY) bench/probe.py
	$(PY) bench/publish.py
	$(PY) bench/memory.py --primary
	$(PY) bench/memory.py
	$(PY) bench/fleet.py

clean:
	rm -rf $(VENV) var
