"""``shoal-agent`` command: load the config, find identity and addresses, then send heartbeats.

Without options it runs in the foreground until SIGTERM/SIGINT (systemd style). The AMQP work runs
in a worker thread so that a broker call blocked in a slow connect can never delay shutdown
beyond ``STOP_GRACE``; the signal handler only sets a flag.
"""
from __future__ import annotations

import argparse
import enum
import logging
import os
import signal
import ssl
import sys
import threading
import time
from typing import List, Optional, TextIO

from . import __version__
from .addresses import NoUsableAddress
from .agent import Agent, confirm_timeout
from .config import AgentConfig, ConfigError, load_config, locate_config
from .heartbeat import encode
from .identity import StateDirError, default_state_dirs, load_or_create_uuid, new_uuid, read_uuid, resolve_state_dir
from .load import LoadError, read_tx_bytes
from .logsetup import setup_logging
from .publisher import Publisher

logger = logging.getLogger("shoal_agent")
STOP_GRACE = 1.5
POLL = 0.1


class ExitCode(enum.IntEnum):
    OK = 0
    NOT_SENT = 1       # --once: no broker confirmed the heartbeat; --dry-run: check_url fails
    CONFIG = 2         # bad or unusable configuration (systemd does not restart on it)
    NO_ADDRESS = 3     # nothing to announce: set external_ip
    INTERRUPTED = 130


class SignalFlag:
    """Set by SIGTERM/SIGINT; the main loop polls it (tests call ``handle`` directly)."""

    def __init__(self) -> None:
        self.should_exit = False
        self.signum: Optional[int] = None

    def handle(self, signum: int, frame: object) -> None:
        self.should_exit = True
        self.signum = signum

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shoal-agent", description="Announce this Squid cache to shoal-server.")
    parser.add_argument("--config", help="INI file (default: $SHOAL_AGENT_CONFIG, /etc/shoal, ~/.shoal)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="send one heartbeat, exit 0 once the broker confirms it")
    mode.add_argument("--dry-run", action="store_true", help="print the heartbeat JSON that would be sent, and exit")
    parser.add_argument("--version", action="version", version=f"shoal-agent {__version__}")
    return parser.parse_args(argv)


def _existing_state_dir(config: AgentConfig) -> str:
    """For --dry-run: the state directory if it exists, creating nothing."""
    candidates = [config.general.state_dir] if config.general.state_dir else list(default_state_dirs())
    for folder in candidates:
        if os.path.isdir(folder):
            return folder
    return candidates[0]


def _check_interface(config: AgentConfig) -> None:
    general = config.general
    if general.interface and general.load_source == "interface":
        try:
            read_tx_bytes(general.interface)
        except LoadError as err:
            raise ConfigError(config.path, "general", "interface", str(err).split(";")[0]) from None


def build_agent(config: AgentConfig, dry_run: bool, err: TextIO) -> Agent:
    """Resolve state directory and identity, and wire the agent; raises ConfigError."""
    _check_interface(config)
    if dry_run:
        state_dir = _existing_state_dir(config)
        uuid = read_uuid(state_dir) if os.path.isdir(state_dir) else None
        if uuid is None:
            uuid = new_uuid()
            print(f"shoal-agent: no uuid saved in {state_dir} yet; showing a new one (dry run saves nothing)",
                  file=err)
        return Agent(config, uuid, state_dir)
    try:
        state_dir = resolve_state_dir(config.general.state_dir)
        uuid = load_or_create_uuid(state_dir)
    except OSError as error:
        raise ConfigError(config.path, "general", "state_dir", str(error)) from None
    try:
        publisher = Publisher(config.rabbitmq, client_name=f"shoal-agent {uuid}",
                              confirm_timeout=confirm_timeout(config.rabbitmq.reply_timeout(),
                                                              config.general.interval))
    except (OSError, ValueError, ssl.SSLError) as error:
        raise ConfigError(config.path, "rabbitmq", "amqp_client_cert", f"cannot read the certificate: {error}") \
            from None
    return Agent(config, uuid, state_dir, publisher=publisher)


def run_daemon(agent: Agent, flag: SignalFlag) -> int:
    """Run the agent loop in a worker thread until a signal; return within STOP_GRACE of it."""
    stop = threading.Event()
    worker = threading.Thread(target=agent.run, args=(stop,), name="shoal-agent-loop", daemon=True)
    worker.start()
    while not flag.should_exit and worker.is_alive():
        time.sleep(POLL)
    stop.set()
    worker.join(STOP_GRACE)
    if worker.is_alive():
        logger.warning("exiting while a broker call is still blocked; the broker will drop the connection")
    if flag.should_exit:
        logger.info("stopped by signal %s", flag.signum)
        return ExitCode.OK
    logger.error("the heartbeat loop ended unexpectedly")
    return ExitCode.NOT_SENT


def main(argv: Optional[List[str]] = None, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = parse_args(argv)
    try:
        config = load_config(locate_config(args.config))
        setup_logging(config.logging, config.path)
        if config.path == "(defaults)":
            logger.warning("no configuration file found (--config, $SHOAL_AGENT_CONFIG, /etc/shoal, ~/.shoal); "
                           "using the defaults")
        agent = build_agent(config, args.dry_run, err)
        agent.detect()
    except ConfigError as error:
        print(f"shoal-agent: {error}", file=err)
        return ExitCode.CONFIG
    except NoUsableAddress as error:
        print(f"shoal-agent: {error}", file=err)
        return ExitCode.NO_ADDRESS

    if args.dry_run:
        heartbeat = agent.preview()
        print(encode(heartbeat).decode("utf-8"), file=out)
        if agent.check.enabled and not agent.check.run().ok:
            print(f"shoal-agent: check_url fails ({agent.check.result.reason}); the agent would not announce",
                  file=err)
            return ExitCode.NOT_SENT
        return ExitCode.OK

    if args.once:
        try:
            reason = agent.once()
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
        if reason:
            print(f"shoal-agent: heartbeat not sent: {reason}", file=err)
            if config.logging.log_file:   # otherwise the line above already went to stderr
                logger.error("heartbeat not sent: %s", reason)
            return ExitCode.NOT_SENT
        return ExitCode.OK

    flag = SignalFlag()
    flag.install()
    return run_daemon(agent, flag)


if __name__ == "__main__":
    sys.exit(main())
