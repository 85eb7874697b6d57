# Shoal: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv deps test test-fast demo bench rpms repo el9-venv clean

$(VENV)/.installed: $(wildcard shoal-*/pyproject.toml shoal-*/setup.cfg) requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e './shoal-server[geolite2,legacy-geoip]' -e ./shoal-agent -e ./shoal-client -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

# The Debian packages the integration tests drive (Squid, Apache, rpm/dnf, Puppet, Chromium, node, ...):
# installed when missing and we are root, else the command to run is printed (.ci/install-deps).
deps:
	.ci/install-deps

# Everything: unit, property and integration tests (real broker, Squid, Apache, Chromium, builds).
test: deps venv
	$(PY) -m pytest $(PYTEST_ARGS) tests/

# Pure and in-process tests only (no `integration` mark, see tests/conftest.py): under a minute,
# on one worker per core (pytest-xdist; a test module stays on one worker).
FAST_FUZZ_EXAMPLES ?= 200
FAST_WORKERS ?= auto
test-fast: venv
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-$(FAST_FUZZ_EXAMPLES)} $(PY) -m pytest -q -m "not integration" \
	    -n $(FAST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests/

# The main job: broker, server, agents and a client on loopback, until Ctrl-C (demo/run.py).
demo: venv
	$(PY) demo/run.py

# Benchmarks (bench/run_all.py); figures land in bench/results/ and docs/performance.md.
bench: venv
	$(PY) bench/run_all.py

# EL 9 noarch RPMs and SRPMs under dist/: shoal-server(-httpd), shoal-agent, shoal-client and
# python3-webpy/python3-pika from PyPI sdists (repo/build-rpms.sh; SHOAL_RPM_* to retarget).
rpms: venv
	PYTHON=$(abspath $(PY)) repo/build-rpms.sh

# Yum repositories repo/prod and repo/dev from dist/*.rpm (repo/make-repo.sh).
repo: rpms
	repo/make-repo.sh

# An EL 9-like Python 3.9 (toolchain and library versions of repo/el9-python.txt) for the
# EL 9 rebuild and end-to-end test (tests/deploy/test_deploy_el9.py).
EL9_PYTHON ?= $(HOME)/.pyenv/versions/3.9.18/bin/python
EL9_VENV ?= .venv-el9
$(EL9_VENV)/.installed: repo/el9-python.txt
	$(EL9_PYTHON) -m venv --clear $(EL9_VENV)
	$(EL9_VENV)/bin/python -m pip install -q --disable-pip-version-check pip==21.2.3
	$(EL9_VENV)/bin/python -m pip install -q --disable-pip-version-check -r repo/el9-python.txt
	touch $@

el9-venv: $(EL9_VENV)/.installed

clean:
	rm -rf $(VENV) $(EL9_VENV) build dist */build */dist */*.egg-info .pytest_cache
