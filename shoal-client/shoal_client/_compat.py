"""Python 2.7 / 3.x shims: the only module that looks at the interpreter version.

Everything else in the client imports these names instead of testing ``sys.version_info``.
"""
import os
import sys

PY2 = sys.version_info[0] == 2

if PY2:  # pragma: no cover - exercised by the 2.7 run of the portable suite
    import ConfigParser as configparser  # noqa: N813
    import httplib as http_client
    from urllib2 import (HTTPError, HTTPSHandler, ProxyHandler, Request, URLError,  # noqa: F401
                         build_opener)
    from urlparse import urlsplit, urlunsplit  # noqa: F401
    text_type = unicode  # noqa: F821
    binary_type = str
    unichr_ = unichr  # noqa: F821
    integer_types = (int, long)  # noqa: F821
    string_types = (str, unicode)  # noqa: F821
else:
    import configparser  # noqa: F401
    import http.client as http_client  # noqa: F401
    from urllib.error import HTTPError, URLError  # noqa: F401
    from urllib.parse import urlsplit, urlunsplit  # noqa: F401
    from urllib.request import (HTTPSHandler, ProxyHandler, Request,  # noqa: F401
                                build_opener)
    text_type = str
    binary_type = bytes
    unichr_ = chr
    integer_types = (int,)
    string_types = (str,)

try:
    import json as _json
except ImportError:  # an interpreter built or packaged without json: use our own parser
    _json = None

if _json is not None:
    json_loads = _json.loads
    JSON_PARSER = "json"
else:
    from .minijson import loads as json_loads  # noqa: F401
    JSON_PARSER = "minijson"

try:
    from time import monotonic
except ImportError:  # Python 2
    from time import time as monotonic  # noqa: F401

try:
    import ssl
except ImportError:  # Python built without OpenSSL: HTTPS URLs are refused with a clear error
    ssl = None


# Raised by a TLS handshake or host-name check. On 2.7 and 3.6 a host-name mismatch is
# ssl.CertificateError (a ValueError, not an SSLError) and urllib does not wrap it in URLError.
TLS_ERRORS = ()
if ssl is not None:
    TLS_ERRORS = (ssl.SSLError,) + ((ssl.CertificateError,) if hasattr(ssl, "CertificateError") else ())


def is_main_thread():
    """True in the interpreter's main thread (the only one that may set signal handlers)."""
    import threading
    main = getattr(threading, "main_thread", None)
    if main is not None:
        return threading.current_thread() is main()
    return isinstance(threading.current_thread(), threading._MainThread)  # Python 2


def read_config(parser, path):
    """Read one INI file into ``parser`` as UTF-8 text on both major versions."""
    import io
    with io.open(path, encoding="utf-8") as fh:
        if PY2:
            parser.readfp(fh, path)
        else:
            parser.read_file(fh, path)


def new_config_parser():
    """A RawConfigParser (no %-interpolation: URLs may contain %)."""
    return configparser.RawConfigParser()


def which(name, path=None):
    """``shutil.which`` for Python 2 too: the first executable ``name`` on ``path``."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    if path is None:
        path = os.environ.get("PATH", os.defpath)
    for folder in path.split(os.pathsep):
        if not folder:
            continue
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def ssl_context(ca_file=None):
    """A verifying client context: the system CA store, or only ``ca_file`` when given."""
    if ssl is None or not hasattr(ssl, "create_default_context"):
        raise RuntimeError("this Python cannot verify HTTPS certificates (no ssl.create_default_context)")
    return ssl.create_default_context(cafile=ca_file or None)


def is_timeout(exc):
    """True when ``exc`` (or the reason it wraps) is a socket timeout."""
    import socket
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, socket.timeout):
        return True
    return isinstance(reason, (OSError, IOError)) and "timed out" in str(reason)


def is_tls_error(exc):
    """True when ``exc`` (or the reason it wraps) is a TLS/certificate failure."""
    if ssl is None:
        return False
    return isinstance(getattr(exc, "reason", exc), TLS_ERRORS)
