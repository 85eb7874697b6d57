"""``shoal-server`` command: load config, start the service, serve HTTP until SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import List, Optional

from . import __version__
from .config import ConfigError, GeneralSettings, load_config, locate_config
from .geo import GeoDatabaseError
from .httpfront import FrontSettings, HTTPFront
from .logsetup import setup_logging
from .service import ShoalService

logger = logging.getLogger("shoal_server")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shoal-server", description="Serve the nearest Squid caches.")
    parser.add_argument("--config", help="INI file (default: $SHOAL_SERVER_CONFIG, /etc/shoal, ~/.shoal)")
    parser.add_argument("--version", action="version", version=f"shoal-server {__version__}")
    return parser.parse_args(argv)


def front_settings(general: GeneralSettings) -> FrontSettings:
    """The built-in front's limits from ``[general]``."""
    return FrontSettings(threads=general.web_threads, max_request_line=general.http_max_request_line,
                         max_header_bytes=general.http_max_header_bytes,
                         request_timeout=general.http_request_timeout, idle_timeout=general.http_idle_timeout,
                         max_connections=general.http_max_connections)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(locate_config(args.config))
        setup_logging(config.logging, config.path)
        service = ShoalService(config)
    except ConfigError as err:
        print(f"shoal-server: {err}", file=sys.stderr)
        return err.exit_code
    except GeoDatabaseError as err:
        print(f"shoal-server: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"shoal-server: {err}", file=sys.stderr)
        return 2
    general = config.general
    server = HTTPFront((general.host, general.port), service.wsgi(), front_settings(general))
    service.watch_front(server.stats)
    try:
        server.prepare()
    except OSError as err:
        print(f"shoal-server: cannot listen on {general.host}:{general.port}: {err}", file=sys.stderr)
        service.stop()
        return 1
    should_exit = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        should_exit.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    http = threading.Thread(target=server.serve, name="shoal-http", daemon=True)
    http.start()
    logger.info("shoal-server %s listening on http://%s:%s/ (config %s)", __version__, general.host,
                general.port, config.path)
    while not should_exit.wait(0.5):
        pass
    logger.info("stopping")
    server.stop()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
