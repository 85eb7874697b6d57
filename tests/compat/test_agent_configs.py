"""Every upstream shoal-agent config file of 2014-2025 loads in our agent, with warnings only.

tests/compat/configs/<release>/shoal_agent.conf holds, per hep-gc/shoal release, every key that
release's shoal_agent/config.py reads, with the values of its sample file (see each file's header).
"""
from __future__ import annotations

import configparser
import glob
import logging
import os
import re

import pytest

from shoal_agent.config import OBSOLETE, ConfigError, load_config

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
RELEASES = ["0.7.1", "shoal-agent-0.9.5", "agent-0.9.9", "shoal-agent-1.0.2", "HEAD"]
# Every agent file of every release: the sample as shipped and variants with every key it reads.
AGENT_FILES = sorted(glob.glob(os.path.join(CONFIGS, "*", "shoal_agent*.conf")))
# Keys upstream agents read that mean nothing here; each must be in the table and warned about.
UPSTREAM_OBSOLETE = {"global_access", "domain_access", "access_level", "cloud", "admin_email"}


def path_of(release: str) -> str:
    return os.path.join(CONFIGS, release, "shoal_agent.conf")


def load_with_warnings(path: str, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    return config, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def obsolete_in(path: str) -> set:
    """The ``section.key`` names of ``path`` that the agent's table calls obsolete."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return {f"{s}.{k}" for s in parser.sections() for k in parser.options(s) if f"{s}.{k}" in OBSOLETE}


def test_every_release_has_agent_config_files():
    releases = {os.path.basename(os.path.dirname(p)) for p in AGENT_FILES}
    assert releases >= set(RELEASES)
    seen = {name.split(".", 1)[1] for path in AGENT_FILES for name in obsolete_in(path)}
    assert seen >= UPSTREAM_OBSOLETE  # the files really exercise the old keys


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.split("configs" + os.sep)[1])
def test_upstream_config_loads_with_one_warning_per_obsolete_key(path, caplog):
    config, warnings = load_with_warnings(path, caplog)
    expected = obsolete_in(path)
    found = {f"{m.group(1)}.{m.group(2)}" for m in (re.search(r"\[(\w+)\] (\w+) is obsolete: ", w) for w in warnings) if m}
    assert found == expected, warnings
    assert len(warnings) == len(expected), warnings  # one each, nothing else
    for name in expected:  # each names what replaces the key or says it is ignored
        section, key = name.split(".")
        (text,) = [w for w in warnings if f"[{section}] {key} is obsolete: " in w]
        assert text.endswith(OBSOLETE[name]) and ("ignored" in text or "replaced by" in text)
    # The values the release meant are the values we use.
    assert config.general.interval == 30.0
    assert config.general.squid_port == 3128
    assert config.general.max_load == 122000.0
    assert config.rabbitmq.amqp_port == 5672 and config.rabbitmq.amqp_exchange == "shoal"
    assert config.rabbitmq.use_ssl is False
    assert config.logging.logging_level == "error"
    assert config.logging.log_file == "/var/log/shoal_agent.log"


def test_the_table_covers_every_obsolete_upstream_key():
    for key in UPSTREAM_OBSOLETE:
        assert f"general.{key}" in OBSOLETE


def test_a_host_name_with_underscore_is_accepted_as_upstream_did(tmp_path):
    """0.9.9's dnsname read anything; sites use names like squid_05.example.org (the server serves them)."""
    conf = tmp_path / "shoal_agent.conf"
    conf.write_text("[general]\ndnsname = Squid_05.example.org\n")
    assert load_config(str(conf)).general.dnsname == "squid_05.example.org"
    conf.write_text("[general]\ndnsname = squid;05.example.org\n")
    with pytest.raises(ConfigError):
        load_config(str(conf))


def test_host_values_with_stray_blanks_are_read_as_meant():
    # 0.9.5's sample has "amqp_server_url = localhost " and 0.9.9's "external_ip =  ".
    config = load_config(path_of("agent-0.9.9"))
    assert (config.rabbitmq.amqp_server_url, config.general.external_ip) == ("localhost", "")
    assert load_config(path_of("HEAD")).rabbitmq.amqp_server_url == "shoal.heprc.uvic.ca"


def head_credentials_file() -> str:
    """HEAD's file with the credential keys (use_credentials = False, a user name set)."""
    (path,) = [p for p in AGENT_FILES if os.sep + "HEAD" + os.sep in p and "use_credentials" in open(p).read()]
    return path


def file_login(path: str) -> tuple:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return parser.get("rabbitmq", "amqp_username"), parser.get("rabbitmq", "amqp_password")


def test_head_use_credentials_false_means_guest_as_upstream(caplog):
    """HEAD reads amqp_username/amqp_password only with use_credentials = true; otherwise guest."""
    config, _ = load_with_warnings(path_of("0.7.1"), caplog)  # no credentials keys at all
    assert config.rabbitmq.plain_login() == ("guest", "guest")

    path = head_credentials_file()
    assert file_login(path)[0] != "guest" and re.search(r"use_credentials\s*=\s*False", open(path).read())
    assert load_config(path).rabbitmq.plain_login() == ("guest", "guest")


def test_use_credentials_true_logs_in_with_the_configured_user(tmp_path):
    path = head_credentials_file()
    text = re.sub(r"use_credentials\s*=\s*False", "use_credentials=True", open(path).read())
    conf = tmp_path / "shoal_agent.conf"
    conf.write_text(text)
    assert load_config(str(conf)).rabbitmq.plain_login() == file_login(path)


def test_ignored_login_is_said_once_at_info(tmp_path, caplog):
    """Upstream's samples set a user name beside use_credentials = False: said, but not as a warning."""
    conf = tmp_path / "shoal_agent.conf"
    conf.write_text("[rabbitmq]\namqp_username = shoal\namqp_password = secret\n")
    with caplog.at_level(logging.INFO):
        load_config(str(conf))
    said = [r for r in caplog.records if "logging in as guest" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO and "use_credentials" in said[0].getMessage()


@pytest.mark.parametrize("release", RELEASES)
def test_a_misspelt_current_key_is_still_an_error(release, tmp_path):
    text = open(path_of(release)).read().replace("interval", "intervall", 1)
    conf = tmp_path / "shoal_agent.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(conf))
    assert (err.value.section, err.value.key, err.value.exit_code) == ("general", "intervall", 2)


def test_an_obsolete_key_in_the_wrong_section_is_an_error(tmp_path):
    """The table is per section: global_access under [rabbitmq] is a mistake, not an old file."""
    conf = tmp_path / "shoal_agent.conf"
    conf.write_text("[rabbitmq]\nglobal_access = True\n")
    with pytest.raises(ConfigError, match=r"\[rabbitmq\] global_access: unknown key"):
        load_config(str(conf))


@pytest.mark.integration
def test_the_agent_binary_starts_from_an_upstream_file(tmp_path):
    """`shoal-agent --dry-run` with 0.9.9's file: warnings on stderr, no config error (exit 2)."""
    import subprocess
    import sys

    text = open(path_of("agent-0.9.9")).read().replace("/var/log/shoal_agent.log", str(tmp_path / "a.log"))
    text = text.replace("external_ip =  ", "external_ip = 192.0.2.10")
    conf = tmp_path / "shoal_agent.conf"
    conf.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "shoal_agent", "--config", str(conf), "--dry-run"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    log = proc.stdout + proc.stderr + (tmp_path / "a.log").read_text() if (tmp_path / "a.log").exists() else \
        proc.stdout + proc.stderr
    assert proc.returncode != 2, log
    assert "access_level is obsolete" in log, log


@pytest.mark.integration
def test_head_file_without_use_credentials_logs_in_as_guest_on_a_real_broker(tmp_path, exchange):
    """HEAD's file names a user the broker does not know; with use_credentials = False upstream (and we)
    log in as guest, so `shoal-agent --once` gets its heartbeat confirmed by the machine's broker."""
    import subprocess
    import sys

    text = open(head_credentials_file()).read()
    text = re.sub(r"amqp_server_url\s*=.*", "amqp_server_url=127.0.0.1", text)
    text = re.sub(r"amqp_exchange\s*=.*", f"amqp_exchange={exchange}", text)
    text = re.sub(r"external_ip\s*=.*", "external_ip=192.0.2.10", text)
    text = text.replace("/var/log/shoal_agent.log", str(tmp_path / "agent.log"))
    conf = tmp_path / "shoal_agent.conf"
    conf.write_text(text)
    env = {**os.environ, "HOME": str(tmp_path)}
    once = [sys.executable, "-m", "shoal_agent", "--config", str(conf), "--once"]
    proc = subprocess.run(once, capture_output=True, text=True, timeout=90, env=env)
    log = (tmp_path / "agent.log").read_text() if (tmp_path / "agent.log").exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + log

    # The same file with use_credentials = True really uses the (unknown) user: refused.
    conf.write_text(re.sub(r"use_credentials\s*=\s*False", "use_credentials=True", text))
    proc = subprocess.run(once, capture_output=True, text=True, timeout=90, env=env)
    assert proc.returncode != 0


@pytest.mark.parametrize("program", ["agent", "server"])
@pytest.mark.parametrize("use_credentials,expected", [("false", ("guest", "guest")), ("true", ("shoal", "secret"))])
def test_connection_parameters_follow_use_credentials_in_both_programs(tmp_path, program, use_credentials, expected):
    """amqp.py is shared: the server's login follows the same upstream rule as the agent's."""
    import importlib

    config_module = importlib.import_module(f"shoal_{program}.config")
    amqp = importlib.import_module(f"shoal_{program}.amqp")
    conf = tmp_path / "shoal.conf"
    conf.write_text(f"[rabbitmq]\nuse_credentials = {use_credentials}\namqp_username = shoal\namqp_password = secret\n")
    settings = config_module.load_config(str(conf)).rabbitmq
    credentials = amqp.connection_params(settings, "127.0.0.1", 5672).credentials
    assert (credentials.username, credentials.password) == expected
    assert amqp.authenticated_user(settings) == expected[0]
