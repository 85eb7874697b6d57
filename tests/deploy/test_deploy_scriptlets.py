"""The RPM scriptlets, executed: what an install, upgrade or removal asks systemd to do.

Each scriptlet is taken from the built package's header and run with /bin/sh and its $1 as rpm
would (1 = install, 2 = upgrade, 0 = removal). /usr/bin/systemctl is replaced by a recorder (which
says httpd is active or not as the case wants), and the path of shoal.conf by a temp file; both
replacements are asserted, so a scriptlet that stops using them fails here instead of passing
silently. Also: the systemd unit refuses to start while the Apache mode's shoal.conf exists.
"""
from __future__ import annotations

import configparser
import subprocess
from pathlib import Path
from typing import List

import pytest

from deploy_helpers import ROOT, run
from support.tools import requires

TAGS = {"pre": "PREIN", "post": "POSTIN", "preun": "PREUN", "postun": "POSTUN", "posttrans": "POSTTRANS"}
SHOAL_CONF = "/etc/httpd/conf.d/shoal.conf"

RECORDER = """#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
if [ "$1" = "-q" ] && [ "$2" = "is-active" ]; then
    case " $ACTIVE " in *" $3 "*) exit 0 ;; esac
    exit 3
fi
exit 0
"""


def scriptlet(rpm: Path, which: str) -> str:
    body = run(["rpm", "-qp", "--nosignature", "--qf", f"%{{{TAGS[which]}}}", str(rpm)]).stdout
    return "" if body == "(none)" else body


class Host:
    """A fake host for scriptlets: a systemctl recorder, httpd active or not, shoal.conf present or not."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = tmp / "systemctl.log"
        self.systemctl = tmp / "systemctl"
        self.systemctl.write_text(RECORDER)
        self.systemctl.chmod(0o755)
        self.shoal_conf = tmp / "shoal.conf"

    def run(self, rpm: Path, which: str, arg: int, active: str = "", conf: bool = False) -> List[str]:
        body = scriptlet(rpm, which)
        assert body, f"{rpm.name} has no %{which}"
        assert "/usr/bin/systemctl" in body, body
        body = body.replace("/usr/bin/systemctl", str(self.systemctl))
        if SHOAL_CONF in body:
            body = body.replace(SHOAL_CONF, str(self.shoal_conf))
        if conf:
            self.shoal_conf.write_text("# Apache mode\n")
        elif self.shoal_conf.exists():
            self.shoal_conf.unlink()
        self.log.write_text("")
        env = {"PATH": "/usr/bin:/bin", "SYSTEMCTL_LOG": str(self.log), "ACTIVE": active}
        proc = subprocess.run(["/bin/sh", "-c", body, "sh", str(arg)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (which, arg, proc.stderr)
        return [line for line in self.log.read_text().splitlines() if not line.startswith("-q is-active")]


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path)


def test_server_upgrade_restarts_the_running_service(built, host):
    server = built.rpm("server")
    assert host.run(server, "post", 1) == ["--no-reload preset shoal-server.service"]
    assert host.run(server, "post", 2) == []                       # upgrade: no preset again
    assert host.run(server, "postun", 1) == ["try-restart shoal-server.service"]
    assert host.run(server, "postun", 0) == []                     # removal: preun stopped it
    assert host.run(server, "preun", 0) == ["--no-reload disable --now shoal-server.service"]
    assert host.run(server, "preun", 1) == []


def test_server_upgrade_reloads_httpd_in_apache_mode_only(built, host):
    server = built.rpm("server")
    # Apache mode (shoal.conf installed) with httpd running: httpd reloads and runs the new code.
    assert host.run(server, "posttrans", 0, active="httpd.service", conf=True) == ["reload httpd.service"]
    # httpd installed for something else, Shoal in systemd mode: httpd is left alone.
    assert host.run(server, "posttrans", 0, active="httpd.service", conf=False) == []
    # Apache mode but httpd stopped: nothing to reload (and nothing started).
    assert host.run(server, "posttrans", 0, active="", conf=True) == []


def test_httpd_subpackage_switches_modes(built, host):
    httpd = built.rpm("server-httpd")
    # Installing Apache mode stops the systemd service (its unit will not start again) and
    # makes a running httpd take shoal.conf.
    assert host.run(httpd, "post", 1, active="httpd.service") == [
        "stop shoal-server.service", "try-reload-or-restart httpd.service"]
    # Removing it makes httpd drop Shoal; an upgrade of it does not reload twice.
    assert host.run(httpd, "postun", 0, active="httpd.service") == ["try-reload-or-restart httpd.service"]
    assert host.run(httpd, "postun", 1, active="httpd.service") == []


def test_agent_and_client_scriptlets(built, host):
    agent, client = built.rpm("agent"), built.rpm("client")
    assert host.run(agent, "postun", 1) == ["try-restart shoal-agent.service"]
    assert host.run(client, "post", 1) == ["--no-reload preset shoal-client.timer"]
    assert host.run(client, "preun", 0) == ["--no-reload disable --now shoal-client.timer shoal-client.service"]
    assert host.run(client, "preun", 1) == []


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_systemd_unit_does_not_start_in_apache_mode(built):
    """shoal-server.service's condition names exactly the file shoal-server-httpd installs."""
    service = unit(ROOT / "shoal-server" / "conf" / "shoal-server.service")
    assert service["Unit"]["ConditionPathExists"] == f"!{SHOAL_CONF}"
    files = run(["rpm", "-qpl", "--nosignature", str(built.rpm("server-httpd"))]).stdout.split()
    assert files == [SHOAL_CONF]


def test_client_cron_line_splays_by_host(tmp_path):
    """The cron alternative, uncommented and run as cron would (\\% -> %, /bin/sh): sleeps 0-1799 s by host name."""
    text = (ROOT / "shoal-client" / "conf" / "shoal-client.cron").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("#*/30 ")]
    fields = line[1:].split(None, 6)
    assert fields[:5] == ["*/30", "*", "*", "*", "*"] and fields[5] == "root"
    assert not [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")], "cron is off by default"
    command = fields[6]
    assert "%" not in command.replace("\\%", ""), "a bare % ends a cron command"
    command = command.replace("\\%", "%")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sleep").write_text('#!/bin/sh\necho "sleep $1" >> "$LOG"\n')
    (fake / "shoal-client").write_text('#!/bin/sh\necho "client $*" >> "$LOG"\n')
    delays = set()
    for hostname in ("wn001.example.org", "wn002.example.org", "wn003.example.org", "wn117.example.org"):
        (fake / "hostname").write_text(f"#!/bin/sh\necho {hostname}\n")
        for tool in fake.iterdir():
            tool.chmod(0o755)
        log = tmp_path / f"{hostname}.log"
        env = {"PATH": f"{fake}:/usr/bin:/bin", "LOG": str(log)}
        proc = subprocess.run(["/bin/sh", "-c", command.replace("/usr/bin/shoal-client", str(fake / "shoal-client"))],
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        sleep, client = log.read_text().splitlines()
        delay = int(sleep.split()[1])
        assert 0 <= delay < 1800
        assert client == "client --config /etc/shoal/shoal_client.conf --quiet --reload"
        delays.add(delay)
    assert len(delays) == 4  # different hosts, different seconds


def test_client_timer_spreads_the_workers():
    timer = unit(ROOT / "shoal-client" / "conf" / "shoal-client.timer")["Timer"]
    assert timer["OnUnitActiveSec"] == "30min" and timer["RandomizedDelaySec"] == "30min"
    service = unit(ROOT / "shoal-client" / "conf" / "shoal-client.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].startswith("/usr/bin/shoal-client ")


@requires("logrotate")
def test_server_logrotate_file_rotates(tmp_path):
    """The shipped server logrotate file, forced once: the log is moved aside and a fresh one created."""
    text = (ROOT / "shoal-server" / "conf" / "shoal-server.logrotate").read_text()
    assert "/var/log/shoal-server/*.log" in text and "su shoal shoal" in text and "create 0640 shoal shoal" in text
    user = run(["id", "-un"]).stdout.strip()
    text = (text.replace("/var/log/shoal-server", str(tmp_path)).replace("su shoal shoal", "")
            .replace("create 0640 shoal shoal", f"create 0640 {user} {user}"))
    (tmp_path / "conf").write_text(text)
    (tmp_path / "shoal-server.log").write_text("old line\n")
    result = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "conf")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "shoal-server.log.1").read_text() == "old line\n"   # delaycompress: first one plain
    assert (tmp_path / "shoal-server.log").read_text() == ""
    assert oct((tmp_path / "shoal-server.log").stat().st_mode & 0o777) == "0o640"
