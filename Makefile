# The only set-up commands on a fresh machine are `make demo` and `make test`:
# each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-loaded demo bench lint docs clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU torch first and pinned: the frameworks below would otherwise pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,fast,gpu,integrations]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The same suite beside two CPU-bound processes, as on a busy CI machine (tests/conftest.py).
test-loaded: $(STAMP)
	METRICBUS_TEST_HOGS=2 $(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/metricbus demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The documentation site into site/; strict (mkdocs.yml): a broken link, anchor or API reference fails.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check bus sinks producers tests benchmarks
	$(VENV)/bin/ruff format --check bus sinks producers tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build site *.egg-info
