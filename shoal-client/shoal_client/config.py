"""The client's settings: defaults, the INI file, and which file is used. No I/O at import."""
import os

from ._compat import configparser, new_config_parser, read_config
from .proxies import InvalidProxy, MAX_CACHES, check_server_url, parse_default_proxy

SECTION = "general"
SEARCH_PATHS = ("/etc/shoal/shoal_client.conf", "~/.shoal/shoal_client.conf")
TRUE_WORDS = ("1", "yes", "true", "on")
FALSE_WORDS = ("0", "no", "false", "off")


class ConfigError(Exception):
    """A bad setting; names the file, section and key. ``main`` prints it and exits 2."""

    exit_code = 2

    def __init__(self, path, key, msg, section=SECTION):
        where = path or "<command line>"
        if key:
            where = "%s [%s] %s" % (where, section, key)
        Exception.__init__(self, "%s: %s" % (where, msg))
        self.path, self.section, self.key, self.msg = path, section, key, msg


class ClientConfig(object):
    """Every setting the client uses, with its default; ``path`` is the file it came from, if any."""

    FIELDS = ("shoal_server_url", "cvmfs_config", "default_squid_proxy", "timeout", "caches", "ca_file",
              "reload", "lock_timeout")

    def __init__(self, shoal_server_url="http://localhost:8080/nearest",
                 cvmfs_config="/etc/cvmfs/default.local", default_squid_proxy="DIRECT", timeout=10.0,
                 caches=None, ca_file="", reload=False, lock_timeout=60.0, path=None):
        self.shoal_server_url = shoal_server_url
        self.cvmfs_config = cvmfs_config
        self.default_squid_proxy = default_squid_proxy
        self.timeout = timeout
        self.caches = caches
        self.ca_file = ca_file
        self.reload = reload
        self.lock_timeout = lock_timeout
        self.path = path

    def replace(self, **changes):
        """A copy with ``changes`` applied (None values are ignored: "not given on the command line")."""
        values = dict((name, getattr(self, name)) for name in self.FIELDS)
        values.update((k, v) for k, v in changes.items() if v is not None)
        return ClientConfig(path=self.path, **values)

    def default_proxy_groups(self):
        return parse_default_proxy(self.default_squid_proxy)

    def __repr__(self):
        return "ClientConfig(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.FIELDS)


def to_positive_float(text):
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def to_caches(text):
    value = int(str(text).strip())
    if not 0 < value <= MAX_CACHES:
        raise ValueError("must be an integer from 1 to %d" % MAX_CACHES)
    return value


def to_bool(text):
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("must be one of %s" % "/".join(TRUE_WORDS + FALSE_WORDS))


def to_server_url(text):
    return check_server_url(text.strip())


def to_default_proxy(text):
    try:
        parse_default_proxy(text)
    except InvalidProxy as err:
        raise ValueError(str(err))
    return text.strip()


def to_text(text):
    return text.strip()


def to_optional_caches(text):
    return to_caches(text) if text.strip() else None


CONVERTERS = {
    "shoal_server_url": to_server_url,
    "cvmfs_config": to_text,
    "default_squid_proxy": to_default_proxy,
    "timeout": to_positive_float,
    "caches": to_optional_caches,
    "ca_file": to_text,
    "reload": to_bool,
    "lock_timeout": to_positive_float,
}


def find_config(search_paths=SEARCH_PATHS, home=None):
    """The first existing file of ``search_paths`` (``~`` means ``home``), or None."""
    for path in search_paths:
        if path.startswith("~") and home:
            path = home + path[1:]
        path = os.path.expanduser(path)
        if os.path.isfile(path):
            return path
    return None


def load_config(path):
    """Read ``path`` into a ClientConfig; None gives the defaults. Raise ConfigError."""
    config = ClientConfig()
    if path is None:
        return config
    parser = new_config_parser()
    try:
        read_config(parser, path)
    except (IOError, OSError) as err:
        raise ConfigError(path, None, "cannot read: %s" % (err.strerror or err))
    except (configparser.Error, UnicodeDecodeError) as err:
        raise ConfigError(path, None, "not a valid INI file: %s" % str(err).splitlines()[0])
    if not parser.has_section(SECTION):
        raise ConfigError(path, None, "no [%s] section" % SECTION)
    values = {}
    for key, raw in parser.items(SECTION):
        if key not in CONVERTERS:
            raise ConfigError(path, key, "unknown setting (known: %s)" % ", ".join(ClientConfig.FIELDS))
        try:
            values[key] = CONVERTERS[key](raw)
        except ValueError as err:
            raise ConfigError(path, key, "%r: %s" % (raw, err))
    result = config.replace(**values)
    result.path = path
    return result
