"""Table invariants under identities and legacy senders, for any sequence of heartbeats (hypothesis)."""
from __future__ import annotations

import collections

from hypothesis import given, settings, strategies as st

from shoal_server.heartbeat import InvalidHeartbeat, Limits, validate
from shoal_server.table import CacheTable

LIMITS = Limits(require_user_id=True, accept_unauthenticated=True, legacy_users=frozenset({"guest"}))
MAX_UUIDS = 2

ops = st.lists(st.one_of(
    st.tuples(st.just("hb"), st.sampled_from(["u1", "u2", "u3", "u4", "u5"]),
              st.sampled_from(["a.example", "b.example", "c.example"]),
              st.sampled_from([None, "guest", "a.example", "b.example"]),
              st.integers(0, 50)),
    st.tuples(st.just("expire"), st.integers(0, 50)),
    st.tuples(st.just("discard"), st.sampled_from(["a.example", "b.example", "c.example"])),
), max_size=60)


def no_place(address):
    return None


@settings(max_examples=300, deadline=None)
@given(ops)
def test_identity_indexes_and_rules_hold_for_any_sequence(operations):
    table = CacheTable()
    for op in operations:
        if op[0] == "hb":
            _, uuid, hostname, user, t = op
            hb = validate({"uuid": uuid, "hostname": hostname, "squid_port": 3128, "public_ip": "81.2.69.5",
                           "load": 1, "timestamp": 1000.0 + t}, 1000.0 + t, LIMITS, user)
            before = table.get(uuid)
            try:
                entry = table.upsert(hb, 1000.0 + t, no_place, max_uuids=MAX_UUIDS if hb.authenticated else None)
            except InvalidHeartbeat as err:
                assert err.reason in ("owner_mismatch", "too_many_uuids", "hostname_taken")
                assert table.get(uuid) == before            # a refused heartbeat changes nothing
                continue
            if before is not None and before.owner is not None:
                assert entry.owner == before.owner          # nobody takes over an owned uuid
        elif op[0] == "expire":
            table.expire(1000.0 + op[1], 10.0)
        else:
            table.discard(lambda e, name=op[1]: e.hb.hostname != name)
        rows = table.snapshot()
        auth = [e for e in rows if e.hb.authenticated]
        assert table._owned == collections.Counter(e.owner for e in auth)
        assert table._auth_hosts == collections.Counter(e.hb.hostname for e in auth)
        assert table._unauth_hosts == collections.Counter(e.hb.hostname for e in rows if not e.hb.authenticated)
        assert all(e.owner == e.hb.user_id for e in auth)
        assert all(n <= MAX_UUIDS for n in table._owned.values())
        auth_names = {e.hb.hostname for e in auth}
        assert not any(e.hb.hostname in auth_names for e in rows if not e.hb.authenticated)
        assert all(e.owner is None for e in rows if not e.hb.authenticated)
