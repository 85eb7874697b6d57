"""Server configuration: defaults, upstream files keep working, every mistake names file, section and key."""
import subprocess
import sys

import pytest

from shoal_server.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "shoal_server.conf"
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert (cfg.general.host, cfg.general.port) == ("127.0.0.1", 8080)
    assert (cfg.cache.cache_cleanse_interval, cfg.cache.cache_inactive_time) == (15, 180)
    assert (cfg.cache.cache_distloadweight, cfg.cache.cache_loadconstant, cfg.cache.cache_max_load) == (0.5, 1, 122000)
    assert cfg.rabbitmq.amqp_exchange == "shoal" and cfg.rabbitmq.use_ssl is False


def test_upstream_2021_file_is_accepted(tmp_path):
    # The sample file shipped with the 2014-2024 server: [squid] squid_* keys and obsolete sections.
    path = write(tmp_path, """
[general]
shoal_dir = /var/www/shoal/
geolitecity_url = http://geolite.maxmind.com/download/geoip/database/GeoLiteCity.dat.gz
geolitecity_update_time = 2592000
[squid]
squid_cleanse_interval = 15
squid_inactive_time = 240
squid_verification = True
squid_verify_interval = 3600
squid_verified_default = False
squid_max_load = 122000
squid_loadconstant = 1
squid_distloadweight = 0.5
[agentless]
json_interval = 3600
[rabbitmq]
amqp_server_url = localhost
amqp_port       = 5672
amqp_virtual_host = /
use_ssl          = False
amqp_exchange = shoal
amqp_exchange_type = topic
[webpy]
webpy_cache = False
[logging]
log_file = /var/log/shoal_server.log
[error]
error_reconnect_time = 30
""")
    cfg = load_config(path)
    assert cfg.cache.cache_inactive_time == 240 and cfg.cache.cache_verification is True


@pytest.mark.parametrize("text,section,key", [
    ("[general]\nprot = 80\n", "general", "prot"),
    ("[general]\nport = eighty\n", "general", "port"),
    ("[general]\nport = 70000\n", "general", "port"),
    ("[cache]\ncache_distloadweight = 1.5\n", "cache", "cache_distloadweight"),
    ("[cache]\ncache_verification = maybe\n", "cache", "cache_verification"),
    ("[general]\ntrusted_proxies = 10.0.0.0/8, not-an-ip\n", "general", "trusted_proxies"),
    ("[rabbitmq]\nuse_ssl = true\n", "rabbitmq", "amqp_ca_cert"),
    ("[rabbitmq]\nuse_ssl = true\namqp_ca_cert = /nonexistent/ca.pem\n", "rabbitmq", "amqp_ca_cert"),
    ("[bogus]\nx = 1\n", "bogus", ""),
    ("[logging]\nlogging_level = loud\n", "logging", "logging_level"),
])
def test_mistakes_name_file_section_and_key(tmp_path, text, section, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert (err.value.section, err.value.key, err.value.path) == (section, key, path)
    assert str(err.value).startswith(f"{path}: [{section}]")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "missing.conf"))
    assert "cannot read" in str(err.value)


def test_command_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "[cache]\ncache_inactive_time = soon\n")
    out = subprocess.run([sys.executable, "-m", "shoal_server", "--config", path], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "[cache] cache_inactive_time" in out.stderr and path in out.stderr


def test_missing_geoip_database_names_the_key_and_is_not_fatal(tmp_path, caplog):
    """No database is not a config error (tests/server/test_geoip_watch.py has the whole story)."""
    import logging

    from shoal_server.service import ShoalService

    config = load_config(write(tmp_path, "[general]\ngeoip_database = /nonexistent/GeoLite2-City.mmdb\n"))
    with caplog.at_level(logging.ERROR):
        service = ShoalService(config)
    assert "[general] geoip_database" in caplog.text and "/nonexistent/GeoLite2-City.mmdb" in caplog.text
    assert service.locator.health()["status"] == "missing"  # type: ignore[attr-defined]
    service.stop()
