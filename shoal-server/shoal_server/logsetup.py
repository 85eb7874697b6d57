"""The ``[logging]`` section and the process-wide log setup, shared by server and agent.

This file is the single source; ``shoal_agent/logsetup.py`` is a symlink to it. Only the
command-line entry points call ``setup_logging``: library modules never configure logging.
"""
from __future__ import annotations

import dataclasses
import logging
import logging.handlers

from .inifile import ConfigError, setting, to_choice, to_path

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclasses.dataclass(frozen=True)
class LoggingSettings:
    log_file: str = setting("", to_path)
    logging_level: str = setting("info", to_choice(*LOG_LEVELS))


def setup_logging(settings: LoggingSettings, config_path: str) -> None:
    """Log to ``log_file`` (reopened after logrotate moves it) or else to stderr (the journal)."""
    handler: logging.Handler
    if settings.log_file:
        try:
            handler = logging.handlers.WatchedFileHandler(settings.log_file)
        except OSError as err:
            raise ConfigError(config_path, "logging", "log_file",
                              f"cannot open {settings.log_file}: {err.strerror}") from None
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.logging_level.upper())
    # pika logs every failed connect with a traceback; our loops report failures themselves, once.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
