"""A restored snapshot is input too (issue 14 item 8): owner checked against user_id, verified re-derived."""
from __future__ import annotations

import json
import time

from shoal_server.heartbeat import Heartbeat, Limits, parse_heartbeat
from shoal_server.snapshot import decode, encode
from shoal_server.table import CacheTable

from test_identity_grants import FakeGeo, GRANTS, hb, listed, make_service

NOW = time.time()


def table_of(*rows):
    table = CacheTable()
    for uuid, user in rows:
        heartbeat = parse_heartbeat(hb(uuid, "squid.evil.example", "81.2.69.5", verified=True), NOW,
                                    Limits(require_user_id=True), user)
        table.upsert(heartbeat, NOW, FakeGeo().locate)
    return table


def tamper(data, **changes):
    doc = json.loads(data)
    for record in doc["entries"]:
        record.update(changes)
    return json.dumps(doc).encode()


def test_a_record_whose_owner_is_not_its_user_id_is_refused():
    data = encode(table_of(("u1", "squid.evil.example")).snapshot(), NOW, "shoal")
    limits = Limits(require_user_id=True)
    entries, bad = decode(data, NOW, 600, "shoal", limits, FakeGeo().locate)
    assert (len(entries), bad) == (1, 0) and entries[0].owner == "squid.evil.example"
    for forged in ({"owner": "squid.cern.ch"}, {"owner": None}, {"user_id": "squid.cern.ch"}):
        entries, bad = decode(tamper(data, **forged), NOW, 600, "shoal", limits, FakeGeo().locate)
        assert (entries, bad) == ([], 1), forged


def test_verified_is_not_taken_from_the_file():
    table = table_of(("u1", "squid.evil.example"))
    table.set_verified("u1", True)
    data = tamper(encode(table.snapshot(), NOW, "shoal"), verified=True)
    # With server-side verification on, neither the server's old result nor the agent's claim counts.
    limits = Limits(require_user_id=True, trust_verified_claim=False)
    (entry,), bad = decode(data, NOW, 600, "shoal", limits, FakeGeo().locate)
    assert bad == 0 and entry.verified is None and entry.is_verified is False


def test_restore_applies_grants_and_the_uuid_limit(tmp_path):
    forged = table_of(*[(f"u{i}", "squid.evil.example") for i in range(10)])
    outside = parse_heartbeat(hb("cern-fake", "squid.evil.example", "188.184.1.1"), NOW, Limits(), "squid.evil.example")
    forged.upsert(outside, NOW, FakeGeo().locate)
    state = tmp_path / "state"
    state.mkdir()
    (state / "table.json").write_bytes(encode(forged.snapshot(), NOW, "shoal"))
    service = make_service(tmp_path, grants=GRANTS, state_dir=str(state))
    assert service.restore() == 4           # cern-fake: outside the grant; u4..u9: beyond 4 uuids
    assert sorted(listed(service)) == ["u0", "u1", "u2", "u3"]
    assert isinstance(service.table.get("u0").hb, Heartbeat)
