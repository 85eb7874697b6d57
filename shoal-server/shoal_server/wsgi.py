"""WSGI entry for Apache mod_wsgi: ``shoal_server.wsgi:application``.

The service (consumer and purge threads) starts on the first request of each process, so a
``WSGIDaemonProcess`` with one process holds one table. The config file is Apache's
``SetEnv shoal.config PATH`` if given, else the usual search ($SHOAL_SERVER_CONFIG, /etc/shoal,
~/.shoal). The process-wide service is the one global here: WSGI gives us nowhere else to keep it.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Optional

from .config import load_config, locate_config
from .logsetup import setup_logging
from .service import ShoalService

_lock = threading.Lock()
_service: Optional[ShoalService] = None


def get_service(config_path: Optional[str] = None) -> ShoalService:
    """Build and start the process's service exactly once."""
    global _service
    with _lock:
        if _service is None:
            config = load_config(locate_config(config_path))
            setup_logging(config.logging, config.path)
            service = ShoalService(config)
            service.start()
            _service = service
        return _service


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    service = _service or get_service(environ.get("shoal.config"))
    return service.wsgi()(environ, start_response)
