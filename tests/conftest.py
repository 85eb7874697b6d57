"""Fixtures shared by every test directory: the real broker on 5672, isolated per test by exchange."""
from __future__ import annotations

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from support import tools  # noqa: E402
from support.heartbeats import Publisher  # noqa: E402
from support.procs import ServerProcess  # noqa: E402

# What makes a test an integration test (deselected by `make test-fast`), decided here in one place:
# a directory whose tests all drive installed software, a fixture that starts a process or needs the
# shared broker, or a module listed below; plus an explicit @pytest.mark.integration anywhere.
INTEGRATION_DIRS = {"deploy", "reliability"}
PROCESS_FIXTURES = {
    "exchange", "publisher", "server_factory", "server",            # shared broker, shoal-server processes
    "agent_factory",                                                 # shoal-agent processes (tests/agent)
    "rabbit", "rabbit_conf", "servers", "agents",                    # private RabbitMQ nodes (reliability)
    "browser_factory",                                               # headless Chromium (tests/web)
    "suite_results", "wheel",                                        # pyenv interpreters, pip builds (client)
    "installed_shoal", "www", "built",                               # pip/RPM installs (tests/deploy)
}
# Modules whose own helpers start brokers, Squid, Apache, Node, puppet, the demo or the CLIs.
INTEGRATION_MODULES = {
    "tests/test_typing.py",                    # mypy over both packages
    "tests/bench/test_smoke.py",               # benchmark scripts with their own brokers
    "tests/web/test_demo.py",                  # `make demo`: CA, TLS broker, server, agents
    "tests/agent/test_agent_tls.py",           # private TLS brokers
    "tests/security/test_broker_tls.py",
    "tests/security/test_classic_config.py",
    "tests/server/test_pac.py",                # pacparser in a /usr/bin/python3 subprocess per PAC
}


# Single in-process tests too slow for `make test-fast` (seconds of CPU each): they run in `make test`.
SLOW_TESTS = {
    "tests/security/test_identity_grants.py::test_one_certificate_sending_50000_uuids_keeps_only_its_allowance",
}


def is_integration(item: pytest.Item) -> bool:
    """True when ``item`` starts processes or drives installed software (see the tables above)."""
    rel = os.path.relpath(str(item.path), ROOT).replace(os.sep, "/")
    parts = rel.split("/")
    return (item.get_closest_marker("integration") is not None
            or (len(parts) > 2 and parts[1] in INTEGRATION_DIRS)
            or rel in INTEGRATION_MODULES
            or f"{rel}::{item.name}" in SLOW_TESTS
            or bool(PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ()))))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_integration(item) and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item):
    tools.check_marks(item)  # needs_tool marks: skip locally, fail under CI=true


SHARED_BROKER = {"amqp_server_url": "127.0.0.1", "amqp_port": 5672,
                 "amqp_username": "guest", "amqp_password": "guest"}


@pytest.fixture
def exchange() -> str:
    """A fresh exchange name, so tests sharing the machine's broker never see each other's heartbeats."""
    return f"shoal-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def publisher(exchange):
    pub = Publisher(exchange)
    yield pub
    pub.close()


@pytest.fixture
def server_factory(tmp_path, exchange):
    """Start real shoal-server processes on the shared broker; all are stopped at teardown."""
    started = []

    def start(cache=None, general=None, extra=None, rabbitmq=None, wait_connected=True, name=None):
        rabbit = {**SHARED_BROKER, "amqp_exchange": exchange, **(rabbitmq or {})}
        proc = ServerProcess(str(tmp_path / (name or f"server{len(started)}")), rabbit, cache or {},
                             general or {}, extra)
        started.append(proc)
        return proc.start(wait_connected=wait_connected)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def server(server_factory):
    return server_factory(cache={"cache_cleanse_interval": 0.2, "cache_inactive_time": 3})
