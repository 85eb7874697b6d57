"""Turn a /nearest answer into proxy strings for CVMFS and Frontier; pure, no I/O.

Every name and port that ends up in ``default.local`` passes ``cache_url`` first, because that file
is sourced by a shell: an unchecked name could break CVMFS for every worker of a site.
"""
from ._compat import integer_types, string_types, urlsplit, urlunsplit
from .hostrule import is_ipv4, is_ipv6, is_loopback_name, is_proxy_host, is_served_host

DEFAULT_CACHES = 5  # written when the number is not asked for (the server's own default)
MAX_CACHES = 32  # never more: CVMFS tries them in order, a longer line only delays DIRECT/fallback


class InvalidResponse(ValueError):
    """The server's answer is JSON but not the /nearest shape."""


class NoCaches(ValueError):
    """The server's answer holds no usable cache."""


class InvalidProxy(ValueError):
    """A configured proxy member is not one CVMFS accepts (DIRECT, auto, [http[s]://]host[:port])."""


def is_hostname(name):
    """True for a host name the server may serve (the shared rule in ``hostrule``)."""
    return is_served_host(name)


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
    """``host`` as it goes in a URL: IPv6 literals in brackets, lower case."""
    host = host.lower()
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
        if is_ipv4(host) or is_ipv6(host):
            raise ValueError("refusing %r: not a global unicast address" % (host,))
        if is_loopback_name(host):
            raise ValueError("refusing %r: a name for this host itself" % (host,))
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


def cache_urls(document, limit=MAX_CACHES):
    """Return (the first ``limit`` urls in rank order without duplicates, [warning per skipped cache])."""
    groups, warnings = cache_groups(document, limit)
    return [url for group in groups for url in group], warnings


def cache_groups(document, limit=MAX_CACHES):
    """Return (groups of equally good cache urls in rank order, [warning per skipped cache]).

    Consecutive records with the same integer ``group`` (served by Shoal servers that group
    caches of one site or of nearly equal cost) form one group, which CVMFS gets joined with
    ``|``; a record without it (upstream servers) is a group of its own. At most ``limit`` urls.
    """
    groups, seen, warnings, last = [], set(), [], None
    for rank, record in enumerate(ranked_records(document)):
        if len(seen) >= limit:
            break
        try:
            url = cache_url(record)
        except ValueError as err:
            warnings.append("skipping cache #%d: %s" % (rank, err))
            continue
        if url in seen:
            continue
        seen.add(url)
        number = record.get("group")
        if not isinstance(number, integer_types) or isinstance(number, bool):
            number = None
        if groups and number is not None and number == last:
            groups[-1].append(url)
        else:
            groups.append([url])
        last = number
    if not groups:
        if warnings:
            raise NoCaches("no usable cache in the server's answer (%s)" % "; ".join(warnings))
        raise NoCaches("the server returned no caches")
    return groups, warnings


def parse_default_proxy(text):
    """Split a CVMFS proxy string (``;`` groups of ``|`` members) into validated groups.

    Each member is what CVMFS accepts there: ``DIRECT``, ``auto`` (the proxies of the site's
    PAC, CVMFS_PAC_URLS), ``http://HOST[:PORT]``, ``https://HOST[:PORT]`` or a bare
    ``HOST[:PORT]`` (written back as ``http://HOST[:PORT]``). An empty string means no fallback.
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


def site_fallback(value, ours=()):
    """The site's own proxies in a CVMFS_HTTP_PROXY value found before Shoal's first edit.

    Kept as groups; ``DIRECT`` is dropped (no fleet stampeding to the stratum-1s when the caches
    fail: a site that wants it says so in ``default_squid_proxy``), and so are members Shoal
    serves (``ours``) and members CVMFS could not use either (returned as warnings).
    Return (groups, warnings).
    """
    groups, warnings = [], []
    for group in (value or "").split(";"):
        members = []
        for member in group.split("|"):
            member = member.strip()
            if not member:
                continue
            try:
                member = _proxy_member(member)
            except InvalidProxy as err:
                warnings.append("ignoring the remembered site proxy %s" % err)
                continue
            if member != "DIRECT" and member not in ours and member not in members:
                members.append(member)
        if members and members not in groups:
            groups.append(members)
    return groups, warnings


def _proxy_member(member):
    if member.upper() == "DIRECT":
        return "DIRECT"
    if member.lower() == "auto":
        return "auto"
    scheme = "http://"
    for prefix in ("http://", "https://"):
        if member.lower().startswith(prefix):
            scheme, member = prefix, member[len(prefix):]
            break
    else:
        if "://" in member:
            raise InvalidProxy("%r: CVMFS proxies are DIRECT, auto, http:// or https:// URLs" % (member,))
    host, port = _split_hostport(member.rstrip("/"))
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # a fully qualified name in the site's own setting: same host
    if not is_proxy_host(host):
        raise InvalidProxy("%r: neither DIRECT, auto nor a proxy HOST[:PORT] (invalid host name)" % (member,))
    if port is not None and parse_port(port) is None:
        raise InvalidProxy("%r: invalid port" % (member,))
    return "%s%s%s" % (scheme, host_for_url(host), "" if port is None else ":%d" % parse_port(port))


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
    """The CVMFS_HTTP_PROXY value: the caches' groups in order (a group of equally good caches
    joined with ``|``, so CVMFS spreads a site's workers over them), then the default groups.

    ``urls`` holds cache urls (each its own group) or lists of them (``cache_groups``).
    """
    groups = [item if isinstance(item, string_types) else "|".join(item) for item in urls]
    for group in default_groups:
        joined = "|".join(group)
        if joined not in groups:
            groups.append(joined)
    return ";".join(groups)


def frontier_string(urls, default_groups=(), frontier_server=""):
    """``(proxyurl=URL)...`` for Frontier: the caches, then default proxies that are http:// URLs
    (not DIRECT, not auto: Frontier takes those as proxyconfigurl/direct settings of its own).

    With ``frontier_server`` (the FRONTIER_SERVER value), the whole value with ours merged in.
    """
    out = []
    for item in urls:
        for url in ([item] if isinstance(item, string_types) else item):
            if url not in out:
                out.append(url)
    for group in default_groups:
        for member in group:
            if member.startswith("http://") and member not in out:
                out.append(member)
    ours = ["(proxyurl=%s)" % url for url in out]
    return frontier_merge(frontier_server, ours) if frontier_server.strip() else "".join(ours)


def frontier_merge(frontier_server, ours):
    """Put ``ours`` (``(proxyurl=...)`` groups) into a FRONTIER_SERVER value, as upstream's client did.

    They go before the first existing ``(proxyurl=...)``, or at the end when there is none;
    an existing proxyurl equal to one of ours is dropped. Every other group is kept as it is.
    """
    groups, rest = [], frontier_server.strip()
    while rest.startswith("("):
        end = rest.find(")")
        if end < 0:
            break
        groups.append(rest[:end + 1])
        rest = rest[end + 1:]
    if rest:  # not the (key=value)... syntax: leave it to Frontier, append ours
        return frontier_server.strip() + "".join(ours)
    kept = [g for g in groups if g not in ours]
    first = [i for i, g in enumerate(kept) if g.lower().startswith("(proxyurl=")]
    at = first[0] if first else len(kept)
    return "".join(kept[:at] + ours + kept[at:])


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
