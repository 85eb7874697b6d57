"""Every upstream shoal_server.conf of 2014-2025 loads with one warning per obsolete key; typos stay errors."""
from __future__ import annotations

import configparser
import logging
import os
import subprocess
import sys

import pytest

from shoal_server.config import OBSOLETE, ConfigError, load_config
from support.upstream import config_files

SERVER_FILES = config_files("server")


def obsolete_keys(path):
    """The (section, key) pairs of ``path`` that have no current counterpart."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    current = {"general", "rabbitmq", "cache", "squid", "security", "logging"}
    found = []
    for section in parser.sections():
        for key in parser.options(section):
            if section not in current or f"{section}.{key}" in OBSOLETE:
                found.append((section, key))
    return found


def test_every_release_has_a_server_config():
    releases = {os.path.basename(os.path.dirname(p)) for p in SERVER_FILES}
    assert {"0.7.1", "shoal-server-0.7.3", "shoal-agent-0.9.5", "agent-0.9.9", "shoal-agent-1.0.2", "HEAD"} <= releases


@pytest.mark.parametrize("path", SERVER_FILES, ids=lambda p: p.split("configs/")[1])
def test_upstream_server_config_loads_with_one_warning_per_obsolete_key(path, caplog):
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = obsolete_keys(path)
    assert len(warnings) == len(expected) > 0, warnings
    for (section, key), message in zip(expected, warnings):
        assert f"[{section}] {key} is obsolete: " in message
        assert "replaced by" in message or "ignored" in message
    # What the file means is kept: the [squid]/[cache] values and the broker.
    assert config.cache.cache_inactive_time == 180 and config.cache.cache_cleanse_interval == 15
    assert config.rabbitmq.amqp_exchange == "shoal" and config.rabbitmq.amqp_port == 5672


def test_head_verified_default_is_named_with_what_replaces_it(caplog):
    path = next(p for p in SERVER_FILES if p.endswith("HEAD/shoal_server.conf"))
    with caplog.at_level(logging.WARNING):
        load_config(path)
    [line] = [r.getMessage() for r in caplog.records if "cache_verified_default" in r.getMessage()]
    assert "cache_verification" in line


@pytest.mark.parametrize("section,key", [("cache", "cache_inactiv_time"), ("squid", "squid_max_lod"),
                                         ("general", "geoip_databse"), ("rabbitmq", "amqp_exchang")])
def test_misspelt_current_key_is_still_an_error(tmp_path, section, key):
    source = next(p for p in SERVER_FILES if p.endswith("HEAD/shoal_server.conf"))
    text = open(source).read()
    if f"[{section}]" not in text:
        text += f"\n[{section}]\n"
    text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = 1\n", 1)
    path = tmp_path / "typo.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert err.value.exit_code == 2 and err.value.key == key
    run = subprocess.run([sys.executable, "-m", "shoal_server", "--config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and key in run.stderr
