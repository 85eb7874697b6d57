"""Recognise a heartbeat body that repeats an accepted one byte for byte, load and timestamp aside.

Nearly every message is a known cache's heartbeat: the bytes of its last one with two other
numbers in them. Cutting those two numbers out and looking the rest up (the *template*) costs
a fifth of decoding the JSON and comparing its fields, and gives the same answer, because:

- The body has no backslash, so no string holds an escaped quote or an escaped name: ``"load"``
  and ``"timestamp"`` appear literally wherever they are, and each appears exactly once; followed
  by ``:`` each is a member name, and the JSON number after it is that member's value.
- A template is remembered only from a body with one ``{`` and no ``[`` (an object without
  objects or arrays in it, so both names are top-level), whose two numbers are what the decoder
  made of them, and whose validated heartbeat carries a RawShape that its own fields match (a
  cache's first heartbeat does: its second is already not decoded).
- Two bodies of one template differ only in two complete number tokens, so they decode to the
  same members but those two; validating the second against the heartbeat the first produced
  takes the RawShape path of ``heartbeat.validate``, which reads nothing but those two numbers.
  Validation is a pure function of the body, the time, the limits and the sender's identity
  (RawShape only makes it cheaper), so the answer does not depend on what the table holds now.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .heartbeat import MAX_BODY_BYTES, Heartbeat, Limits, seen_fields

Template = Tuple[bytes, bytes, bytes]   # the bytes before, between and after the two numbers
Cut = Tuple[Template, bytes, bytes]      # (template, load's number, timestamp's number)

_LOAD, _TIMESTAMP = b'"load"', b'"timestamp"'
# ":" then a JSON number token (RFC 8259 grammar) that ends where the member ends.
_VALUE_RE = re.compile(rb"[ \t\n\r]*:[ \t\n\r]*(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?=[ \t\n\r,}])")
# Longer numbers are left to the decoder (int() and json disagree on the error past 4,300 digits).
_MAX_NUMBER_BYTES = 32


def cut(body: bytes) -> Optional[Cut]:
    """Split ``body`` around the first ``"load"`` and ``"timestamp"`` numbers; None when either is missing.

    Cheap, and not enough by itself: only a template that ``exact`` vouched for is ever used, and
    a body that splits into such a template is that body with two other number tokens in it.
    """
    i, j = body.find(_LOAD), body.find(_TIMESTAMP)
    if i < 0 or j < 0 or len(body) > MAX_BODY_BYTES:
        return None
    load, stamp = _VALUE_RE.match(body, i + len(_LOAD)), _VALUE_RE.match(body, j + len(_TIMESTAMP))
    if load is None or stamp is None:
        return None
    (a, b), (c, d) = load.span(1), stamp.span(1)
    if b - a > _MAX_NUMBER_BYTES or d - c > _MAX_NUMBER_BYTES:
        return None
    template = (body[:a], body[b:c], body[d:]) if a < c else (body[:c], body[d:a], body[b:])
    return template, body[a:b], body[c:d]


def exact(body: bytes) -> bool:
    """True when ``cut`` finds the only load and timestamp of ``body`` and nothing in it is escaped."""
    return b"\\" not in body and body.count(_LOAD) == 1 and body.count(_TIMESTAMP) == 1


def numbers(parts: Cut) -> Tuple[float, float]:
    """Load and timestamp of a body cut into ``parts``, as validation reads them (floats; a JSON
    integer token converts to the same float as the int the decoder makes of it)."""
    return float(parts[1]), float(parts[2])


class Repeats:
    """A heartbeat accepted from each template whose repeats may skip decoding (one per cache)."""

    def __init__(self) -> None:
        self._known: Dict[Template, Heartbeat] = {}

    def __len__(self) -> int:
        return len(self._known)

    def get(self, template: Template) -> Optional[Heartbeat]:
        return self._known.get(template)

    def update(self, template: Template, hb: Heartbeat) -> None:
        """``hb`` is the latest heartbeat from a known template (what the table holds, normally)."""
        self._known[template] = hb

    def remember(self, body: bytes, parts: Cut, data: Mapping[str, Any], hb: Heartbeat, limits: Limits) -> bool:
        """Keep ``hb`` for ``parts``' template if ``body`` (decoded: ``data``) vouches for it; True if kept."""
        if parts[0] in self._known or not _trustworthy(body, parts, data, hb, limits):
            return False
        self._known[parts[0]] = hb
        return True

    def keep(self, wanted: Callable[[Heartbeat], bool]) -> None:
        """Forget every template whose heartbeat is not ``wanted`` (its cache left, or sends other bytes)."""
        self._known = {t: hb for t, hb in self._known.items() if wanted(hb)}


def _trustworthy(body: bytes, parts: Cut, data: Mapping[str, Any], hb: Heartbeat, limits: Limits) -> bool:
    """True when repeats of this body may skip decoding: see the module docstring."""
    # One brace and no bracket: no object or array inside (a string holding either only costs the fast path).
    if hb.shape is None or not exact(body) or body.count(b"{") != 1 or b"[" in body:
        return False
    for key, value in zip(("load", "timestamp"), numbers(parts)):
        decoded = data.get(key)
        if type(decoded) not in (int, float) or decoded != value:
            return False
    return hb.shape.matches(seen_fields(data), hb, limits)
