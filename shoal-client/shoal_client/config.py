"""The client's settings: defaults, the INI file, and which file is used. No I/O at import."""
import os

from ._compat import configparser, new_config_parser, read_config
from .proxies import InvalidProxy, MAX_CACHES, check_server_url, parse_default_proxy

SECTION = "general"
SEARCH_PATHS = ("/etc/shoal/shoal_client.conf", "~/.shoal/shoal_client.conf")
ROOT_LOCK_FILE = "/run/shoal-client.lock"
# Keys of upstream shoal-client releases that have another name here: key -> (our key, release).
RENAMED_KEYS = {
    "cvmfs_url": ("shoal_server_url", "upstream shoal-client HEAD (2025)"),
    "default_cache_proxy": ("default_squid_proxy", "upstream shoal-client HEAD (2025)"),
}
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

    FIELDS = ("shoal_server_url", "conditions_url", "cvmfs_config", "default_squid_proxy", "timeout", "caches",
              "ca_file", "reload", "cvmfs_talk", "lock_timeout", "lock_file")

    def __init__(self, shoal_server_url="http://localhost:8080/nearest", conditions_url="",
                 cvmfs_config="/etc/cvmfs/default.local", default_squid_proxy=None, timeout=10.0,
                 caches=None, ca_file="", reload=False, cvmfs_talk=False, lock_timeout=60.0, lock_file="", path=None,
                 warnings=()):
        self.shoal_server_url = shoal_server_url
        self.conditions_url = conditions_url
        self.cvmfs_config = cvmfs_config
        self.default_squid_proxy = default_squid_proxy
        self.timeout = timeout
        self.caches = caches
        self.ca_file = ca_file
        self.reload = reload
        self.cvmfs_talk = cvmfs_talk
        self.lock_timeout = lock_timeout
        self.lock_file = lock_file
        self.path = path
        self.warnings = list(warnings)  # what loading the file had to say (obsolete keys, clamped values)

    def replace(self, **changes):
        """A copy with ``changes`` applied (None values are ignored: "not given on the command line")."""
        values = dict((name, getattr(self, name)) for name in self.FIELDS)
        values.update((k, v) for k, v in changes.items() if v is not None)
        return ClientConfig(path=self.path, warnings=self.warnings, **values)

    def default_proxy_groups(self):
        """The configured fallback groups, or None when not configured (main then uses the site's
        own proxies remembered from before Shoal's first edit, without DIRECT)."""
        if self.default_squid_proxy is None:
            return None
        return parse_default_proxy(self.default_squid_proxy)

    def server_url(self, frontier=False):
        """The /nearest URL to ask: ``conditions_url`` for Frontier when set, else ``shoal_server_url``."""
        return (frontier and self.conditions_url) or self.shoal_server_url

    def lock_path(self, euid, home=None):
        """The lock file: ``lock_file``, else /run/shoal-client.lock for root, else ~/.shoal/."""
        if self.lock_file:
            return self.lock_file
        if euid == 0 or not home:
            return ROOT_LOCK_FILE
        return os.path.join(home, ".shoal", "shoal-client.lock")

    def __repr__(self):
        return "ClientConfig(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.FIELDS)


def to_positive_float(text):
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def to_caches(text):
    """A number of caches >= 1; more than MAX_CACHES is lowered to it (see ``clamp_caches``)."""
    value = int(str(text).strip())
    if value < 1:
        raise ValueError("must be an integer from 1 to %d" % MAX_CACHES)
    return value


def clamp_caches(value):
    """(value lowered to MAX_CACHES, a warning or None): upstream took any number, we write at most 32."""
    if value is not None and value > MAX_CACHES:
        return MAX_CACHES, "asked for %d caches; writing at most %d" % (value, MAX_CACHES)
    return value, None


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


def to_optional_url(text):
    return to_server_url(text) if text.strip() else ""


def to_lock_file(text):
    text = text.strip()
    if text and not os.path.isabs(text):
        raise ValueError("must be an absolute path")
    return text


def to_optional_caches(text):
    return to_caches(text) if text.strip() else None


CONVERTERS = {
    "shoal_server_url": to_server_url,
    "conditions_url": to_optional_url,
    "cvmfs_config": to_text,
    "default_squid_proxy": to_default_proxy,
    "timeout": to_positive_float,
    "caches": to_optional_caches,
    "ca_file": to_text,
    "reload": to_bool,
    "cvmfs_talk": to_bool,
    "lock_timeout": to_positive_float,
    "lock_file": to_lock_file,
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
    values, warnings, given = {}, [], {}
    for key, raw in parser.items(SECTION):
        name = key
        if key in RENAMED_KEYS:
            name, release = RENAMED_KEYS[key]
            warnings.append("%s [%s] %s is the name %s uses; read as %s (rename it to silence this)"
                            % (path, SECTION, key, release, name))
        if name not in CONVERTERS:
            raise ConfigError(path, key, "unknown setting (known: %s)" % ", ".join(ClientConfig.FIELDS))
        try:
            value = CONVERTERS[name](raw)
        except ValueError as err:
            raise ConfigError(path, key, "%r: %s" % (raw, err))
        if name in given and values[name] != value:
            raise ConfigError(path, key, "%r contradicts %s = %r (same setting, two names)"
                              % (raw, given[name], values[name]))
        given[name] = key
        values[name] = value
    values["caches"], warning = clamp_caches(values.get("caches"))
    if warning:
        warnings.append("%s [%s] caches: %s" % (path, SECTION, warning))
    result = config.replace(**values)
    result.path = path
    result.warnings = warnings
    return result
