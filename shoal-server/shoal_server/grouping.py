"""Group the caches of one ranked answer that are equally good for the client; pure.

A group is a run of consecutive ranked caches that are either at the same site as the group's
first cache (they share a public address, or GeoIP places them at the same point) or cost at most
``margin`` more than it. The client joins a group's members with ``|`` in CVMFS_HTTP_PROXY (CVMFS
picks one at random per client), the PAC rotates them per client address: either way a site's
workers spread over its squids instead of all piling onto cache #1.
"""
from __future__ import annotations

from typing import List, Sequence

from .ranking import Ranked


def same_site(a: Ranked, b: Ranked) -> bool:
    ha, hb = a.entry.hb, b.entry.hb
    addresses_a = {ha.public_ip, ha.external_ip} - {None, ""}
    if addresses_a & ({hb.public_ip, hb.external_ip} - {None, ""}):
        return True
    la, lb = a.entry.location, b.entry.location
    return la is not None and lb is not None and (la.latitude, la.longitude) == (lb.latitude, lb.longitude)


def group_ranked(ranked: Sequence[Ranked], margin: float) -> List[List[Ranked]]:
    """Split ``ranked`` (cheapest first) into groups of equally good caches, order kept."""
    groups: List[List[Ranked]] = []
    for r in ranked:
        if groups:
            head = groups[-1][0]
            if r.cost - head.cost <= margin or same_site(head, r):
                groups[-1].append(r)
                continue
        groups.append([r])
    return groups


def group_numbers(ranked: Sequence[Ranked], margin: float) -> List[int]:
    """The group number (0, 1, ...) of each ranked cache, as /nearest serves it in ``group``."""
    out: List[int] = []
    for number, group in enumerate(group_ranked(ranked, margin)):
        out.extend([number] * len(group))
    return out
