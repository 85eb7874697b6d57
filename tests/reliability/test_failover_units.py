"""The agent's failover decisions without a broker: which broker next, and what counts as a failure."""
import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from shoal_agent.amqp import RabbitSettings
from shoal_agent.publisher import ConfirmTimeout, Publisher, PublishError

BROKERS = ("rabbit1:5672", "rabbit2:5672", "rabbit3:5672")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeLoop:
    def call_later(self, delay, callback):
        return object()

    def remove_timeout(self, timer):
        pass


class FakeImpl:
    is_closed = False
    ioloop = FakeLoop()


class FakeConnection:
    is_open = True
    _impl = FakeImpl()

    def close(self):
        self.is_open = False


class FakeChannel:
    is_open = True


class ScriptedPublisher(Publisher):
    """A Publisher whose brokers behave as ``script`` says: 'ok', 'unrouted', 'hang' (handshake),
    'noconfirm' (publish confirm deadline) or 'reset'."""

    def __init__(self, script, clock, failback=60.0):
        super().__init__(RabbitSettings(amqp_servers=BROKERS, failback_interval=failback), monotonic=clock)
        self.script = dict(script)
        self.opened, self.published = [], []

    def _open(self, host, port):
        self.opened.append(host)
        if self.script[host] == "hang":
            raise AMQPConnectorStackTimeout("TCP connection attempt timed out")
        return FakeConnection(), FakeChannel()

    def _publish(self, body, expiration):
        host = self.brokers[self._index][0]
        self.published.append(host)
        behaviour = self.script[host]
        if behaviour == "noconfirm":
            self.close()
            raise ConfirmTimeout(f"{host} sent no confirm")
        if behaviour == "reset":
            raise pika.exceptions.StreamLostError("Connection reset by peer")
        return behaviour != "unrouted"


def test_a_hung_handshake_moves_on_to_the_next_broker():
    pub = ScriptedPublisher({"rabbit1": "hang", "rabbit2": "ok", "rabbit3": "ok"}, Clock())
    assert pub.publish(b"{}", "2000") is True
    assert pub.opened == ["rabbit1", "rabbit2"] and pub.broker == "rabbit2:5672"


def test_every_broker_hung_is_a_publish_error_not_a_traceback():
    pub = ScriptedPublisher({"rabbit1": "hang", "rabbit2": "hang", "rabbit3": "hang"}, Clock())
    with pytest.raises(PublishError, match="rabbit3:5672 AMQPConnectorStackTimeout"):
        pub.publish(b"{}", "2000")


def test_an_unrouted_heartbeat_is_published_on_the_next_broker():
    """Issue 16 (3.): the minority side of a partition has no server queue; the majority has."""
    pub = ScriptedPublisher({"rabbit1": "unrouted", "rabbit2": "ok", "rabbit3": "ok"}, Clock())
    assert pub.publish(b"{}", "2000") is True
    assert pub.published == ["rabbit1", "rabbit2"]


def test_unrouted_everywhere_is_reported_as_unrouted():
    pub = ScriptedPublisher({"rabbit1": "unrouted", "rabbit2": "unrouted", "rabbit3": "unrouted"}, Clock())
    assert pub.publish(b"{}", "2000") is False
    assert pub.published == ["rabbit1", "rabbit2", "rabbit3"]


def test_a_missing_confirm_moves_the_next_heartbeat_elsewhere_without_republishing():
    """Issue 16 (2.): a queue on a paused node holds the confirm; the message already reached the others."""
    clock = Clock()
    pub = ScriptedPublisher({"rabbit1": "noconfirm", "rabbit2": "ok", "rabbit3": "ok"}, clock)
    with pytest.raises(ConfirmTimeout):
        pub.publish(b"{}", "2000")
    assert pub.published == ["rabbit1"] and pub.broker == "rabbit2:5672"
    assert pub.publish(b"{}", "2000") is True and pub.published[-1] == "rabbit2"


def test_recently_failed_brokers_are_tried_last():
    clock = Clock()
    pub = ScriptedPublisher({"rabbit1": "ok", "rabbit2": "reset", "rabbit3": "ok"}, clock)
    pub.connect(start=1)                    # on rabbit2
    pub._failed_at[2] = clock.now           # rabbit3 (hung) failed a moment ago
    assert pub.publish(b"{}", "2000") is True
    assert pub.published == ["rabbit2", "rabbit1"]      # not rabbit3: it would cost a connect_timeout


def test_after_failback_interval_the_first_broker_is_used_again():
    """Issue 16 (6.): spreading back once the preferred node returns."""
    clock = Clock()
    pub = ScriptedPublisher({"rabbit1": "hang", "rabbit2": "ok", "rabbit3": "ok"}, clock, failback=30.0)
    pub.publish(b"{}", "2000")
    assert pub.broker == "rabbit2:5672"
    pub.script["rabbit1"] = "ok"
    clock.now += 29
    pub.publish(b"{}", "2000")
    assert pub.broker == "rabbit2:5672"
    clock.now += 2
    pub.publish(b"{}", "2000")
    assert pub.broker == "rabbit1:5672" and pub.published[-1] == "rabbit2"
    pub.publish(b"{}", "2000")
    assert pub.published[-1] == "rabbit1"


def test_reconnecting_again_and_again_does_not_postpone_the_failback():
    """Seen in CI: agents whose fallback connection kept dropping (nacks, missing confirms while
    node 3 rejoined) never stayed failback_interval on one connection, so never moved back."""
    clock = Clock()
    pub = ScriptedPublisher({"rabbit1": "hang", "rabbit2": "ok", "rabbit3": "ok"}, clock, failback=30.0)
    pub.publish(b"{}", "2000")
    assert pub.broker == "rabbit2:5672"
    pub.script["rabbit1"] = "ok"
    for _ in range(4):          # every 8 s the connection is lost and made again
        clock.now += 8
        pub.publish(b"{}", "2000")
        pub.close()
    assert pub.broker == "rabbit1:5672"


def test_after_a_reconnection_the_first_broker_is_tried_once_the_heartbeat_is_out():
    clock = Clock()
    pub = ScriptedPublisher({"rabbit1": "hang", "rabbit2": "ok", "rabbit3": "ok"}, clock, failback=30.0)
    pub.publish(b"{}", "2000")
    assert pub.broker == "rabbit2:5672"
    pub.script["rabbit1"] = "ok"
    pub.close()                 # the connection died while idle
    clock.now += 31
    assert pub.publish(b"{}", "2000") is True
    assert pub.published[-1] == "rabbit2"          # the heartbeat did not wait for the probe
    assert pub.broker == "rabbit1:5672"            # and the next one goes to the first broker


def test_a_failed_failback_is_retried_only_after_another_interval():
    clock = Clock()
    pub = ScriptedPublisher({"rabbit1": "hang", "rabbit2": "ok", "rabbit3": "ok"}, clock, failback=30.0)
    pub.publish(b"{}", "2000")
    clock.now += 31
    pub.publish(b"{}", "2000")          # failback tried: rabbit1 still hangs
    assert pub.opened.count("rabbit1") == 2 and pub.broker == "rabbit2:5672"
    clock.now += 29
    pub.publish(b"{}", "2000")
    assert pub.opened.count("rabbit1") == 2
    clock.now += 2
    pub.publish(b"{}", "2000")
    assert pub.opened.count("rabbit1") == 3
