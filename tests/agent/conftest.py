"""Fixtures for the agent tests: real agent processes on the shared broker, isolated by exchange."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from agenthelp import SHARED, AgentRunner  # noqa: E402


@pytest.fixture
def agent_factory(tmp_path, exchange):
    """Agents on the shared broker and the test's exchange; every daemon is stopped by PID at teardown."""
    made = []

    def make(name="agent", general=None, squid=None, rabbitmq=None, level="info"):
        runner = AgentRunner(str(tmp_path / name), {**SHARED, "amqp_exchange": exchange, **(rabbitmq or {})},
                             general, squid, level)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.stop()
