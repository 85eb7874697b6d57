"""Fixtures shared by every test directory: the real broker on 5672, isolated per test by exchange."""
from __future__ import annotations

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from support.heartbeats import Publisher  # noqa: E402
from support.procs import ServerProcess  # noqa: E402

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
