"""Refused senders: bounded, filed under the sender, escaped on the page, cleared when accepted."""
import json
import time

from shoal_server.consumer import ConsumerStatus, HeartbeatSink
from shoal_server.heartbeat import Limits, Sender, sender_of
from shoal_server.refused import RefusedSenders
from shoal_server.statuspage import render_refused
from shoal_server.table import CacheTable

NOW = 1_700_000_000.0


class NoGeo:
    def locate(self, address):
        return None


def body(**fields):
    data = {"uuid": "u-1", "hostname": "squid.example.org", "squid_port": 3128, "public_ip": "142.90.1.1",
            "load": 1.0, "timestamp": NOW}
    data.update(fields)
    return json.dumps(data).encode()


def test_registry_keeps_the_newest_senders_only():
    reg = RefusedSenders(capacity=3)
    for i in range(10):
        reg.record(Sender(f"u{i}", None), None, "future", "x", 200.0, NOW + i)
    assert [r.uuid for r in reg.newest()] == ["u9", "u8", "u7"]
    reg.record(Sender("u8", "squid.example.org"), None, "stale", "y", -500.0, NOW + 20)
    latest = reg.newest()[0]
    assert (latest.uuid, latest.reason, latest.count) == ("u8", "stale", 2)
    assert (latest.offset, latest.first_seen) == (-500.0, NOW + 8)


def test_sender_is_only_what_passes_the_rules():
    assert sender_of(body(uuid="<script>", hostname="<b>x</b>")) == Sender(None, None)
    assert sender_of(b"\xff not json") == Sender(None, None)
    assert sender_of(body(hostname="Squid_05.Example.ORG.")) == Sender("u-1", "squid_05.example.org")


def test_sink_records_refusals_and_forgets_a_sender_once_accepted():
    status = ConsumerStatus(lambda: NOW)
    sink = HeartbeatSink(CacheTable(), NoGeo(), Limits(max_age=180), status, clock=lambda: NOW)
    assert sink.handle(body(timestamp=NOW + 600), "agent-cn") is None
    [refusal] = status.refused.newest()
    assert (refusal.uuid, refusal.hostname, refusal.user_id, refusal.reason) == ("u-1", "squid.example.org",
                                                                                  "agent-cn", "future")
    assert round(refusal.offset) == 600
    assert sink.handle(body(max_load="122000"), "agent-cn") is not None
    assert status.refused.newest() == []
    assert status.counters()["repaired"] == {"max_load_string": 1}


def test_refused_section_escapes_everything():
    reg = RefusedSenders()
    reg.record(Sender("u-1", "squid.example.org"), '<script>alert(1)</script>"', "hostname_mismatch",
               'detail with <img src=x onerror=alert(1)> & "quotes"', None, NOW)
    html = render_refused(reg.newest(), NOW + 5)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&quot;quotes&quot;" in html and "5 s ago" in html


def test_empty_registry_says_so():
    assert "No heartbeat has been refused" in render_refused([], time.time())
