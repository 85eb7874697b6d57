"""The files shipped in shoal-agent/conf: sample config, systemd unit, SysV init script, logrotate."""
import configparser
import dataclasses
import os
import re
import shutil
import subprocess
import sys

import pytest

from agenthelp import entries, wait_until
from shoal_agent.config import SCHEMA, load_config
from support.procs import write_ini
from support.tools import requires

CONF = os.path.join(os.path.dirname(__file__), "..", "..", "shoal-agent", "conf")
SAMPLE = os.path.join(CONF, "shoal_agent.conf")
AGENT_BIN = os.path.join(os.path.dirname(sys.executable), "shoal-agent")


def test_sample_config_loads_and_comments_every_key(tmp_path):
    assert load_config(SAMPLE) == dataclasses.replace(load_config(None), path=SAMPLE)
    with open(SAMPLE) as handle:
        text = handle.read()
    for section, cls in SCHEMA.sections.items():
        assert f"[{section}]" in text
        for field in dataclasses.fields(cls):
            assert re.search(rf"^# {field.name} =", text, re.MULTILINE), f"[{section}] {field.name} is not documented"
    # Uncommenting every example still gives a valid file.
    uncommented = re.sub(r"^# (\w+ =)", r"\1", text, flags=re.MULTILINE)
    path = tmp_path / "all.conf"
    path.write_text(uncommented)
    config = load_config(str(path))
    assert config.general.interval == 30 and config.rabbitmq.amqp_servers


def test_systemd_unit():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(CONF, "shoal-agent.service"))
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "shoal"
    assert service["ExecStart"].startswith("/usr/bin/shoal-agent")
    assert service["RestartPreventExitStatus"] == "2"       # a config error needs a person, not a loop
    assert "network-online.target" in unit["Unit"]["After"]
    assert "network-online.target" in unit["Unit"]["Wants"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@requires("logrotate", shutil.which("logrotate") is not None)
def test_logrotate_file_parses(tmp_path):
    with open(os.path.join(CONF, "shoal-agent.logrotate")) as handle:
        text = handle.read().replace("/var/log/shoal-agent", str(tmp_path)).replace("su shoal shoal", "")
    (tmp_path / "conf").write_text(text)
    (tmp_path / "shoal-agent.log").write_text("x\n")
    result = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(tmp_path / "conf")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr


def run_init(env, *args):
    return subprocess.run(["bash", os.path.join(CONF, "shoal-agent.init"), *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.skipif(not os.path.exists(AGENT_BIN), reason="shoal-agent is not installed in the venv")
def test_sysv_init_script_starts_reports_and_stops_the_agent(tmp_path, exchange, server_factory):
    server = server_factory(cache={"cache_inactive_time": 30})
    config = write_ini(str(tmp_path / "shoal_agent.conf"), {
        "general": {"interval": 1, "external_ip": "142.90.100.30", "dnsname": "init.agent-test.example.org",
                    "state_dir": str(tmp_path / "state")},
        "rabbitmq": {"amqp_server_url": "127.0.0.1", "amqp_exchange": exchange},
    })
    env = {**os.environ, "SYSCONFIG": "/nonexistent", "SHOAL_AGENT_BIN": AGENT_BIN, "SHOAL_AGENT_CONFIG": config,
           "SHOAL_USER": subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip(),
           "PIDFILE": str(tmp_path / "agent.pid"), "LOGFILE": str(tmp_path / "log" / "agent.log"),
           "STATE_DIR": str(tmp_path / "state")}
    try:
        started = run_init(env, "start")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "OK (pid" in started.stdout
        assert run_init(env, "status").returncode == 0
        assert run_init(env, "start").stdout.startswith("shoal-agent is already running")
        wait_until(lambda: entries(server), 20, what="agent started by the init script is listed")
    finally:
        stopped = run_init(env, "stop")
    assert stopped.returncode == 0 and "OK" in stopped.stdout
    status = run_init(env, "status")
    assert status.returncode == 3 and "stopped" in status.stdout
    assert not os.path.exists(env["PIDFILE"])
    with open(env["LOGFILE"]) as handle:
        assert "stopped by signal 15" in handle.read()


def test_sysv_init_script_refuses_a_bad_config_with_the_reason(tmp_path):
    config = write_ini(str(tmp_path / "bad.conf"), {"general": {"interval": "often"}})
    env = {**os.environ, "SYSCONFIG": "/nonexistent", "SHOAL_AGENT_BIN": AGENT_BIN, "SHOAL_AGENT_CONFIG": config,
           "SHOAL_USER": subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip(),
           "PIDFILE": str(tmp_path / "agent.pid"), "LOGFILE": str(tmp_path / "agent.log"),
           "STATE_DIR": str(tmp_path / "state")}
    result = run_init(env, "start")
    assert result.returncode == 6
    assert "[general] interval: 'often' is not a valid number" in result.stderr
    assert not os.path.exists(env["PIDFILE"])
