"""Write small MaxMind DB (.mmdb, format 2.0) files for tests: GeoLite2- or db-ip-shaped City data.

The tests need databases that appear, change and have a vendor's exact record shape, without
downloading anything. This writer covers what City databases use: maps, arrays, UTF-8 strings,
doubles, unsigned integers and booleans, in an IPv4 search tree with 24-bit records.
"""
from __future__ import annotations

import ipaddress
import os
import struct
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
DATA_SEPARATOR = b"\x00" * 16
# type numbers of the MaxMind DB format
UTF8, DOUBLE, UINT16, UINT32, MAP, UINT64, ARRAY, BOOLEAN = 2, 3, 5, 6, 7, 9, 11, 14


class Typed:
    """An integer that must be written as a particular type (metadata fields are strictly typed)."""

    def __init__(self, kind: int, value: int) -> None:
        self.kind, self.value = kind, value


def _control(kind: int, size: int) -> bytes:
    first, extended = (kind << 5, b"") if kind <= 7 else (0, bytes([kind - 7]))
    if size < 29:
        return bytes([first | size]) + extended
    if size < 285:
        return bytes([first | 29]) + extended + bytes([size - 29])
    if size < 65821:
        return bytes([first | 30]) + extended + (size - 285).to_bytes(2, "big")
    return bytes([first | 31]) + extended + (size - 65821).to_bytes(3, "big")


def encode(value: Any) -> bytes:
    """One value in the MaxMind DB data-section encoding."""
    if isinstance(value, Typed):
        raw = value.value.to_bytes((value.value.bit_length() + 7) // 8, "big")
        return _control(value.kind, len(raw)) + raw
    if isinstance(value, bool):
        return _control(BOOLEAN, int(value))
    if isinstance(value, int):
        return encode(Typed(UINT32 if value < 2 ** 32 else UINT64, value))
    if isinstance(value, float):
        return _control(DOUBLE, 8) + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _control(UTF8, len(raw)) + raw
    if isinstance(value, dict):
        return _control(MAP, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return _control(ARRAY, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__}")


Child = Union[None, int, Tuple[str, int]]


def build(networks: Sequence[Tuple[str, Dict[str, Any]]], database_type: str = "GeoLite2-City") -> bytes:
    """The bytes of an IPv4 database mapping each network (CIDR, no overlaps) to its record."""
    data = b""
    nodes: List[List[Child]] = [[None, None]]
    for cidr, record in networks:
        net = ipaddress.IPv4Network(cidr)
        offset = len(data)
        data += encode(record)
        bits = int(net.network_address)
        node = 0
        for depth in range(net.prefixlen):
            bit = (bits >> (31 - depth)) & 1
            if depth == net.prefixlen - 1:
                nodes[node][bit] = ("data", offset)
                break
            child = nodes[node][bit]
            if not isinstance(child, int):
                nodes.append([None, None])
                child = len(nodes) - 1
                nodes[node][bit] = child
            node = child
    count = len(nodes)

    def record(child: Child) -> int:
        if child is None:
            return count
        if isinstance(child, int):
            return child
        return count + len(DATA_SEPARATOR) + child[1]

    tree = b"".join(record(l).to_bytes(3, "big") + record(r).to_bytes(3, "big") for l, r in nodes)
    metadata = {
        "node_count": Typed(UINT32, count), "record_size": Typed(UINT16, 24), "ip_version": Typed(UINT16, 4),
        "database_type": database_type, "languages": ["en"],
        "binary_format_major_version": Typed(UINT16, 2), "binary_format_minor_version": Typed(UINT16, 0),
        "build_epoch": Typed(UINT64, int(time.time())), "description": {"en": f"Shoal test {database_type}"},
    }
    return tree + DATA_SEPARATOR + data + METADATA_MARKER + encode(metadata)


def geolite2_record(city: str, country: str, country_name: str, continent: str, lat: float, lon: float,
                    region: str = "", time_zone: str = "UTC") -> Dict[str, Any]:
    """A record shaped like GeoLite2-City's."""
    record: Dict[str, Any] = {
        "city": {"geoname_id": 1, "names": {"en": city}},
        "continent": {"code": continent, "geoname_id": 2, "names": {"en": continent}},
        "country": {"geoname_id": 3, "iso_code": country, "names": {"en": country_name}},
        "location": {"accuracy_radius": 50, "latitude": lat, "longitude": lon, "time_zone": time_zone},
    }
    if region:
        record["subdivisions"] = [{"geoname_id": 4, "iso_code": region, "names": {"en": region}}]
    return record


def dbip_lite_record(city: str, country: str, country_name: str, continent: str, lat: float, lon: float,
                     region_name: str = "") -> Dict[str, Any]:
    """A record shaped like db-ip's free "IP to City Lite" mmdb (db-ip.com/db/format/ip-to-city-lite):
    GeoLite2's City layout without time zone, accuracy radius or subdivision ISO codes."""
    record: Dict[str, Any] = {
        "city": {"names": {"en": city}},
        "continent": {"code": continent, "geoname_id": 6255149, "names": {"en": continent}},
        "country": {"geoname_id": 6251999, "is_in_european_union": False, "iso_code": country,
                    "names": {"en": country_name}},
        "location": {"latitude": lat, "longitude": lon},
    }
    if region_name:
        record["subdivisions"] = [{"names": {"en": region_name}}]
    return record


def write(path: str, networks: Sequence[Tuple[str, Dict[str, Any]]], database_type: str = "GeoLite2-City",
          mtime: Optional[float] = None) -> str:
    """Write the database atomically (as geoipupdate does: a temporary file renamed over the target)."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(build(networks, database_type))
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
    return path
