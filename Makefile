# Shoal: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv test demo bench clean

$(VENV)/.installed: shoal-server/pyproject.toml shoal-agent/pyproject.toml shoal-client/pyproject.toml requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e './shoal-server[geolite2]' -e ./shoal-agent -e ./shoal-client -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest $(PYTEST_ARGS) tests/

clean:
	rm -rf $(VENV) build dist */build */dist */*.egg-info .pytest_cache
