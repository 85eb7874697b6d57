"""Agent configuration: defaults, upstream key names, and one-line errors naming file, section and key."""
import io
import os
import subprocess
import sys

import pytest

from shoal_agent.config import ConfigError, load_config, locate_config
from shoal_agent.main import ExitCode, main
from support.procs import write_ini

UPSTREAM_2014_CONF = """\
#
# A sample configuration file to shoal agent.
#
[general]
interval = 30
# max_load = 122000
admin_email = root@localhost

[rabbitmq]
amqp_server_url = shoal.heprc.uvic.ca
amqp_port = 5672
amqp_virtual_host = /
amqp_exchange = shoal
amqp_exchange_type = topic

[logging]
log_file = /var/log/shoal_agent.log
logging_level = ERROR
"""


def test_defaults_without_a_file():
    config = load_config(None)
    general = config.general
    assert (general.interval, general.squid_port, general.max_load) == (30.0, 3128, 122000.0)
    assert (general.upstream, general.cache_type, general.load_source) == ("both", "squid", "interface")
    assert config.squid.check_url == "" and config.squid.check_interval == 60.0
    assert config.rabbitmq.amqp_exchange == "shoal"
    assert config.expiration_ms == "60000"
    assert config.manager_url == "http://127.0.0.1:3128/squid-internal-mgr/counters"


def test_the_2014_sample_file_still_loads(tmp_path):
    path = tmp_path / "shoal_agent.conf"
    path.write_text(UPSTREAM_2014_CONF)
    config = load_config(str(path))
    assert config.rabbitmq.amqp_server_url == "shoal.heprc.uvic.ca"
    assert config.logging.logging_level == "error"


def test_cache_port_is_an_alias_and_values_convert(tmp_path):
    path = write_ini(str(tmp_path / "a.conf"), {
        "general": {"cache_port": 3129, "interval": 0.5, "external_ip": "2001:DB8::0:1", "dnsname": "Squid.Example.ORG.",
                    "upstream": "CVMFS", "load_source": "squid", "max_load": 50000},
        "squid": {"check_url": "http://cvmfs-stratum-one.cern.ch/cvmfs/atlas.cern.ch/.cvmfswhitelist",
                  "manager_url": "http://127.0.0.1:3129/squid-internal-mgr/5min"},
        "rabbitmq": {"amqp_servers": "broker1:5671, [2001:db8::7]:5671 broker3"},
    })
    config = load_config(path)
    assert config.general.squid_port == 3129
    assert config.general.external_ip == "2001:db8::1"
    assert config.general.dnsname == "squid.example.org"
    assert config.general.upstream == "cvmfs"
    assert config.expiration_ms == "1000"
    assert config.manager_url.endswith("/5min")
    assert config.rabbitmq.brokers() == [("broker1", 5671), ("2001:db8::7", 5671), ("broker3", 5672)]


@pytest.mark.parametrize("section, key, value, fragment", [
    ("general", "interval", "soon", "not a valid number"),
    ("general", "interval", "0", "below the minimum"),
    ("general", "squid_port", "70000", "above the maximum"),
    ("general", "cache_port", "x", "not a valid integer"),
    ("general", "external_ip", "squid.example.org", "not an IP address"),
    ("general", "external_ip", "0.0.0.0", "not a usable unicast"),
    ("general", "dnsname", "bad_name!", "not a valid DNS host name"),
    ("general", "load_source", "snmp", "not one of interface, squid"),
    ("general", "upstream", "everything", "not one of"),
    ("general", "interface", "eth0/../x", "not a network interface"),
    ("general", "colour", "blue", "unknown key"),
    ("squid", "check_url", "ftp://x", "not an http:// URL"),
    ("rabbitmq", "amqp_servers", "host:99999", "invalid port"),
    ("rabbitmq", "use_ssl", "maybe", "not a valid boolean"),
    ("logging", "logging_level", "loud", "not one of"),
])
def test_bad_values_name_file_section_and_key(tmp_path, section, key, value, fragment):
    path = write_ini(str(tmp_path / "bad.conf"), {section: {key: value}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert (err.value.section, err.value.key) == (section, key)
    assert fragment in str(err.value)
    assert str(err.value).startswith(f"{path}: [{section}] {key}: ")


def test_use_ssl_without_certificates_names_the_missing_key(tmp_path):
    path = write_ini(str(tmp_path / "tls.conf"), {"rabbitmq": {"use_ssl": "true"}})
    with pytest.raises(ConfigError, match=r"\[rabbitmq\] amqp_ca_cert: must be set"):
        load_config(path)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    path = write_ini(str(tmp_path / "tls2.conf"), {"rabbitmq": {"use_ssl": "true", "amqp_ca_cert": str(ca)}})
    # EXTERNAL authentication (no use_credentials) needs our own certificate too
    with pytest.raises(ConfigError, match=r"\[rabbitmq\] amqp_client_cert: must be set"):
        load_config(path)


def test_main_prints_one_line_and_exits_2(tmp_path):
    path = write_ini(str(tmp_path / "bad.conf"), {"general": {"interval": "soon"}})
    err = io.StringIO()
    assert main(["--config", path, "--once"], err=err) == ExitCode.CONFIG == 2
    assert err.getvalue() == f"shoal-agent: {path}: [general] interval: 'soon' is not a valid number\n"


def test_main_missing_file_exits_2(tmp_path):
    err = io.StringIO()
    assert main(["--config", str(tmp_path / "nope.conf"), "--dry-run"], err=err) == 2
    assert "cannot read the file" in err.getvalue()


def run_agent(config_path, *args):
    return subprocess.run([sys.executable, "-m", "shoal_agent", "--config", config_path, *args],
                          capture_output=True, text=True, timeout=60)


def test_unknown_interface_and_unusable_state_dir_are_config_errors(tmp_path):
    path = write_ini(str(tmp_path / "if.conf"), {"general": {"interface": "nosuch0", "external_ip": "198.51.100.1"}})
    result = run_agent(path, "--dry-run")
    assert result.returncode == 2
    assert f"{path}: [general] interface: cannot read /sys/class/net/nosuch0/statistics/tx_bytes" in result.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = write_ini(str(tmp_path / "sd.conf"), {"general": {"state_dir": str(blocker / "sub"),
                                                             "external_ip": "198.51.100.1"}})
    result = run_agent(path, "--once")
    assert result.returncode == 2
    assert "[general] state_dir: no writable state directory" in result.stderr
    assert result.stderr.count("\n") == 1


def test_locate_config_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_AGENT_CONFIG", str(tmp_path / "env.conf"))
    assert locate_config("/explicit.conf") == "/explicit.conf"
    assert locate_config(None) == str(tmp_path / "env.conf")
    monkeypatch.delenv("SHOAL_AGENT_CONFIG")
    found = locate_config(None)
    assert found is None or os.path.basename(found) == "shoal_agent.conf"
