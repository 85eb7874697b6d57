# Shoal: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv test demo bench rpms repo clean

$(VENV)/.installed: $(wildcard shoal-*/pyproject.toml shoal-*/setup.cfg) requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e './shoal-server[geolite2]' -e ./shoal-agent -e ./shoal-client -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest $(PYTEST_ARGS) tests/

# The main job: broker, server, agents and a client on loopback, until Ctrl-C (demo/run.py).
demo: venv
	$(PY) demo/run.py

# Benchmarks (bench/run_all.py); figures land in bench/results/ and docs/performance.md.
bench: venv
	$(PY) bench/run_all.py

# Noarch RPMs and SRPMs of the three packages under dist/ (repo/build-rpms.sh).
rpms: venv
	PYTHON=$(abspath $(PY)) repo/build-rpms.sh

# Yum repositories repo/prod and repo/dev from dist/*.rpm (repo/make-repo.sh).
repo: rpms
	repo/make-repo.sh

clean:
	rm -rf $(VENV) build dist */build */dist */*.egg-info .pytest_cache
