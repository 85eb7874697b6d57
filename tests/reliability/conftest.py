"""Fixtures for the reliability tests: one private RabbitMQ node, servers and agents on it."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from rel_support import (AGENT_BIN, CLUSTER_FAILBACK, CLUSTER_INACTIVE, CLUSTER_INTERVAL, SITES,  # noqa: E402
                         AgentProcess, rabbit_settings)
from support.procs import ServerProcess  # noqa: E402
from support.rabbitnode import RabbitNode  # noqa: E402


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory):
    """A private broker node (tests may stop and start it; the shared 5672 broker is never touched)."""
    node = RabbitNode(str(tmp_path_factory.mktemp("rabbit")))
    node.start()
    yield node
    node.stop()


@pytest.fixture
def rabbit_conf(rabbit, exchange):
    return rabbit_settings(rabbit.amqp_port, exchange)


@pytest.fixture
def servers(tmp_path, rabbit_conf):
    """Factory for shoal-server processes on the private node; all stopped by PID at teardown."""
    started = []

    def start(cache=None, general=None, name=None, wait_connected=True, rabbitmq=None):
        cache = {"cache_cleanse_interval": 0.25, "cache_inactive_time": 4, **(cache or {})}
        proc = ServerProcess(str(tmp_path / (name or f"server{len(started)}")), {**rabbit_conf, **(rabbitmq or {})},
                             cache, general or {})
        started.append(proc)
        return proc.start(wait_connected=wait_connected)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def agents(tmp_path, rabbit_conf):
    """Factory for real shoal-agent daemons on the private node; all stopped by PID at teardown."""
    if not os.path.exists(AGENT_BIN):
        pytest.fail(f"{AGENT_BIN} is missing: install shoal-agent (make venv)")
    started = []

    def start(name, interval=1.0, site="cern", rabbitmq=None, general=None):
        agent = AgentProcess(str(tmp_path / name), name, {**rabbit_conf, **(rabbitmq or {})}, interval, site,
                             general)
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        agent.stop()


# Agents and servers on a RabbitMQ cluster (the cluster test modules define a module-scoped
# ``cluster`` fixture, a tests.support.rabbitcluster.RabbitCluster).
@pytest.fixture
def deployment(tmp_path, cluster, exchange):
    """Factories ``server(name, *node order, cache=...)`` and ``agent(name, *node order)`` on ``cluster``;
    everything stopped by PID at teardown."""
    started = []
    common = {"amqp_username": "guest", "amqp_password": "guest", "amqp_exchange": exchange, "heartbeat": 2,
              "connect_timeout": 2, "failback_interval": CLUSTER_FAILBACK}

    def server(name, *order, cache=None):
        proc = ServerProcess(str(tmp_path / name), {**common, "amqp_servers": cluster.amqp_servers(*order)},
                             {"cache_inactive_time": CLUSTER_INACTIVE, "cache_cleanse_interval": 0.25,
                              **(cache or {})})
        started.append(proc)
        return proc.start()

    def agent(name, *order):
        site = list(SITES)[len(started) % len(SITES)]
        proc = AgentProcess(str(tmp_path / name), name, {**common, "amqp_servers": cluster.amqp_servers(*order)},
                            CLUSTER_INTERVAL, site)
        started.append(proc)
        return proc.start()

    yield server, agent
    for proc in started:
        proc.stop()
