"""Turn a /nearest answer into proxy strings for CVMFS and Frontier; pure, no I/O.

Every name and port that ends up in ``default.local`` passes ``cache_url`` first, because that file
is sourced by a shell: an unchecked name could break CVMFS for every worker of a site.
"""
import socket

from ._compat import integer_types, string_types, text_type, urlsplit, urlunsplit

MAX_CACHES = 9999  # the server's route takes at most four digits


class InvalidResponse(ValueError):
    """The server's answer is JSON but not the /nearest shape."""


class NoCaches(ValueError):
    """The server's answer holds no usable cache."""


class InvalidProxy(ValueError):
    """A configured proxy string is not ``DIRECT`` or ``http://host[:port]``."""


def is_ipv4(text):
    """True for a dotted quad (exactly four decimal parts, 0-255, no leading zeros)."""
    parts = text.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not part or len(part) > 3 or not _ascii_digits(part) or (len(part) > 1 and part[0] == "0"):
            return False
        if int(part) > 255:
            return False
    return True


def is_ipv6(text):
    """True for an IPv6 literal without brackets or zone id."""
    if ":" not in text or "%" in text or not _ascii(text):
        return False
    try:
        socket.inet_pton(socket.AF_INET6, str(text))
    except (socket.error, ValueError, UnicodeError):
        return False
    return True


def is_hostname(name):
    """True for an RFC 1123 host name (a trailing dot allowed) or an IPv4/IPv6 literal."""
    if not isinstance(name, string_types) or not name or len(name) > 254 or not _ascii(name):
        return False
    if is_ipv4(name) or is_ipv6(name):
        return True
    labels = (name[:-1] if name.endswith(".") else name).split(".")
    if len(".".join(labels)) > 253:
        return False
    for label in labels:
        if not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            return False
        if any(not (c.isalnum() or c == "-") for c in label):
            return False
    return not _ascii_digits(labels[-1])  # "10.0.0.256" is a bad address, not a name


def parse_port(value):
    """The port as an int 1-65535 (an int, or a string of decimal digits), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, string_types) and _ascii_digits(value.strip()) and len(value.strip()) <= 5:
        value = int(value.strip())
    if isinstance(value, integer_types) and 0 < value < 65536:
        return int(value)
    return None


def host_for_url(host):
    """``host`` as it goes in a URL: IPv6 literals in brackets, trailing dot dropped, lower case."""
    host = host.rstrip(".").lower()
    return "[%s]" % host if ":" in host else host


def cache_url(record):
    """``http://HOST:PORT`` for one cache record; raise ValueError saying why it is unusable."""
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    host = record.get("hostname")
    if host is None or host == "":
        host = record.get("public_ip") or record.get("external_ip")
    if host is None or host == "":
        raise ValueError("no hostname and no public_ip")
    if not is_hostname(host):
        raise ValueError("invalid host name %r" % (host,))
    port_value = record.get("squid_port", record.get("cache_port"))
    port = parse_port(port_value)
    if port is None:
        raise ValueError("invalid port %r for %s" % (port_value, host))
    return "http://%s:%d" % (host_for_url(host), port)


def ranked_records(document):
    """The cache records of a /nearest answer, in the server's rank order (keys "0", "1", ...)."""
    if not isinstance(document, dict):
        raise InvalidResponse("expected a JSON object, got %s" % _json_type(document))
    ranked = []
    for key, record in document.items():
        if not isinstance(key, string_types) or not _ascii_digits(key):
            raise InvalidResponse("unexpected key %r (expected \"0\", \"1\", ...)" % (key,))
        if not isinstance(record, dict):
            raise InvalidResponse("entry %s is %s, not an object" % (key, _json_type(record)))
        ranked.append((int(key), record))
    ranked.sort(key=lambda item: item[0])
    return [record for _, record in ranked]


def cache_urls(document):
    """Return (urls in rank order without duplicates, [warning for each skipped cache])."""
    urls, warnings = [], []
    for rank, record in enumerate(ranked_records(document)):
        try:
            url = cache_url(record)
        except ValueError as err:
            warnings.append("skipping cache #%d: %s" % (rank, err))
            continue
        if url not in urls:
            urls.append(url)
    if not urls:
        if warnings:
            raise NoCaches("no usable cache in the server's answer (%s)" % "; ".join(warnings))
        raise NoCaches("the server returned no caches")
    return urls, warnings


def parse_default_proxy(text):
    """Split a CVMFS proxy string (``;`` groups of ``|`` members) into validated groups.

    Each member is ``DIRECT`` or ``http://HOST[:PORT]``; an empty string means no fallback.
    """
    text = text.strip()
    if not text:
        return []
    groups = []
    for group in text.split(";"):
        members = []
        for member in group.split("|"):
            members.append(_proxy_member(member.strip()))
        groups.append(members)
    return groups


def _proxy_member(member):
    if member.upper() == "DIRECT":
        return "DIRECT"
    if not member.startswith("http://"):
        raise InvalidProxy("%r is neither DIRECT nor an http:// proxy URL" % (member,))
    host, port = _split_hostport(member[len("http://"):].rstrip("/"))
    if not is_hostname(host):
        raise InvalidProxy("%r: invalid host name" % (member,))
    if port is not None and parse_port(port) is None:
        raise InvalidProxy("%r: invalid port" % (member,))
    return "http://%s%s" % (host_for_url(host), "" if port is None else ":%d" % parse_port(port))


def _split_hostport(netloc):
    if netloc.startswith("["):
        close = netloc.find("]")
        if close < 0:
            return netloc, None
        host, rest = netloc[1:close], netloc[close + 1:]
        if not rest:
            return host, None
        return (host, rest[1:]) if rest.startswith(":") else (netloc, None)
    if netloc.count(":") == 1:
        host, port = netloc.split(":")
        return host, port
    return netloc, None


def cvmfs_proxy_value(urls, default_groups):
    """The CVMFS_HTTP_PROXY value: one failover group per cache, then the default groups."""
    groups = list(urls)
    for group in default_groups:
        joined = "|".join(group)
        if joined not in groups:
            groups.append(joined)
    return ";".join(groups)


def frontier_string(urls, default_groups=()):
    """``(proxyurl=URL)...`` for Frontier: the caches, then default proxies that are URLs (not DIRECT)."""
    out = list(urls)
    for group in default_groups:
        for member in group:
            if member != "DIRECT" and member not in out:
                out.append(member)
    return "".join("(proxyurl=%s)" % url for url in out)


def nearest_url(server_url, caches=None):
    """The URL to fetch: ``server_url`` with ``/N`` appended to its path (query string kept)."""
    scheme, netloc, path, query, fragment = urlsplit(server_url)
    if caches is not None:
        path = path.rstrip("/") + "/%d" % caches
    return urlunsplit((scheme, netloc, path, query, ""))


def check_server_url(url):
    """Raise ValueError unless ``url`` is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("%r is not an http:// or https:// URL" % (url,))
    try:
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise ValueError("%r has an invalid port" % (url,))
    return url


def _ascii(text):
    try:
        text.encode("ascii") if isinstance(text, text_type) else text.decode("ascii")
    except (UnicodeError, AttributeError):
        return False
    return True


def _ascii_digits(text):
    return bool(text) and all(c in "0123456789" for c in text)


def _json_type(value):
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, string_types):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
