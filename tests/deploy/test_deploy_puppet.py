"""The Puppet module `shoal`: validates, lints clean, compiles, and renders files the programs accept."""
from __future__ import annotations

import configparser
from pathlib import Path
from typing import Dict, List

import pytest

from deploy_helpers import ROOT, make_env, run
from support.tools import require, requires

MODULE = ROOT / "puppet" / "shoal"

pytestmark = requires("puppet")


def puppet_env(tmp_path: Path) -> Dict[str, str]:
    return make_env(HOME=str(tmp_path))  # puppet keeps per-user state under $HOME/.puppetlabs


def isolated_dirs(tmp_path: Path) -> List[str]:
    """Puppet's state directories inside ``tmp_path`` (nothing under /etc/puppet or /var is touched)."""
    args = []
    for name in ("vardir", "confdir", "codedir", "logdir", "rundir"):
        (tmp_path / name).mkdir()
        args.append(f"--{name}={tmp_path / name}")
    return args


# name -> (template, parameters as Puppet hash source); all rendered by one `puppet apply`.
RENDERS = {
    "agent_full.conf": ("shoal_agent.conf.epp", """{
      broker_host => 'broker.example.org', broker_port => 5671, use_ssl => true,
      ca_cert => '@DIR@/ca.pem', client_cert => '@DIR@/agent.pem', client_key => '@DIR@/agent.key',
      interval => 15, exchange => 'shoal', squid_port => 3129, external_ip => '192.0.2.10',
      dnsname => 'squid.example.org', max_load => 50000, upstream => 'cvmfs',
      check_url => 'http://cvmfs.example.org/cvmfs/.cvmfspublished', logging_level => 'warning',
      log_file => '/var/log/shoal-agent/shoal-agent.log'}"""),
    "agent_minimal.conf": ("shoal_agent.conf.epp", """{
      broker_host => 'b.example.org', broker_port => 5672, use_ssl => false, ca_cert => '/x',
      client_cert => '/x', client_key => '/x', interval => 30, exchange => 'shoal', squid_port => 3128,
      external_ip => undef, dnsname => undef, max_load => 122000, upstream => 'both', check_url => undef,
      logging_level => 'info', log_file => undef}"""),
    "squid.conf": ("squid.conf.epp", """{
      port => 3999, client_networks => ['10.0.0.0/8', 'fc00::/7'], allowed_domains => ['.cern.ch'],
      cache_mem_mb => 64, cache_dir_mb => 100, cache_dir => '@DIR@/spool', max_object_mb => 1024}"""),
    "squid_open.conf": ("squid.conf.epp", """{
      port => 3999, client_networks => ['10.0.0.0/8'], allowed_domains => [],
      cache_mem_mb => 64, cache_dir_mb => 100, cache_dir => '@DIR@/spool', max_object_mb => 1024}"""),
    "shoal.repo": ("shoal.repo.epp", """{
      baseurl => 'https://shoal.example.org/repo', gpgcheck => true,
      gpgkey => 'https://shoal.example.org/repo/RPM-GPG-KEY-shoal', enable_dev => false}"""),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The module's templates rendered with RENDERS' parameters by Puppet itself, into one directory."""
    work = tmp_path_factory.mktemp("puppet-render")
    out = work / "out"
    out.mkdir()
    modules = work / "modules"
    modules.mkdir()
    (modules / "shoal").symlink_to(MODULE)
    resources = []
    for name, (template, params) in RENDERS.items():
        params = params.replace("@DIR@", str(out))
        resources.append(f"file {{ '{out / name}': ensure => file, content => epp('shoal/{template}', {params}) }}")
    site = work / "render.pp"
    site.write_text("\n".join(resources) + "\n")
    run(["puppet", "apply", "--color=false", f"--modulepath={modules}", *isolated_dirs(work), str(site)],
        env=puppet_env(work), timeout=240)
    return out


def test_parser_validate_and_lint():
    manifests = sorted(str(p) for p in (MODULE / "manifests").glob("*.pp"))
    assert {Path(m).name for m in manifests} >= {"init.pp", "agent.pp", "squid.pp"}
    run(["puppet", "parser", "validate", *manifests])
    run(["puppet", "epp", "validate", *sorted(str(p) for p in (MODULE / "templates").glob("*.epp"))])
    require("puppet-lint")
    lint = run(["puppet-lint", "--fail-on-warnings", str(MODULE / "manifests")], check=False)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr


def test_catalog_compiles_and_applies_in_noop(tmp_path):
    """`puppet apply --noop` with both classes: the catalog compiles and every resource evaluates."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "shoal").symlink_to(MODULE)
    site = tmp_path / "site.pp"
    site.write_text("""
class { 'shoal':
  baseurl => 'http://127.0.0.1:9/repo',
}
class { 'shoal::agent':
  broker_host => 'broker.example.org',
  external_ip => '192.0.2.10',
  interval    => 15,
  check_url   => 'http://cvmfs-stratum-one.cern.ch:8000/cvmfs/cvmfs-config.cern.ch/.cvmfspublished',
}
class { 'shoal::squid':
  client_networks => ['10.0.0.0/8'],
}
""")
    proc = run(["puppet", "apply", "--noop", "--detailed-exitcodes", "--color=false",
                f"--modulepath={modules}", *isolated_dirs(tmp_path), str(site)], env=puppet_env(tmp_path), check=False, timeout=240)
    out = proc.stdout + proc.stderr
    # 0: nothing to change, 2: changes (noop reports them); 4/6: failures.
    assert proc.returncode in (0, 2), out
    assert "Compiled catalog" in out
    for resource in ("File[/etc/yum.repos.d/shoal.repo]", "Package[shoal-agent]",
                     "File[/etc/shoal/shoal_agent.conf]", "Service[shoal-agent]",
                     "File[/etc/squid/squid.conf]", "Service[squid]"):
        assert resource in out, f"{resource} not in the catalog:\n{out}"
    assert "Error:" not in "\n".join(line for line in out.splitlines() if "Facter" not in line), out


def test_agent_config_template_is_read_by_the_agent(rendered):
    """What shoal::agent writes is a valid shoal_agent.conf carrying the parameters."""
    from shoal_agent.config import load_config

    for name in ("ca.pem", "agent.pem", "agent.key"):  # use_ssl makes the agent check they are readable
        (rendered / name).write_text("placeholder\n")
    config = load_config(str(rendered / "agent_full.conf"))
    assert (config.rabbitmq.amqp_server_url, config.rabbitmq.amqp_port, config.rabbitmq.use_ssl) == \
        ("broker.example.org", 5671, True)
    assert config.rabbitmq.amqp_client_cert == str(rendered / "agent.pem")
    assert (config.general.interval, config.general.squid_port, config.general.external_ip) == \
        (15.0, 3129, "192.0.2.10")
    assert (config.general.dnsname, config.general.max_load, config.general.upstream) == \
        ("squid.example.org", 50000.0, "cvmfs")
    assert config.squid.check_url == "http://cvmfs.example.org/cvmfs/.cvmfspublished"
    assert (config.logging.logging_level, config.logging.log_file) == \
        ("warning", "/var/log/shoal-agent/shoal-agent.log")

    # Optional parameters left out: the keys are omitted and the agent's defaults apply.
    minimal = rendered / "agent_minimal.conf"
    config = load_config(str(minimal))
    assert (config.general.external_ip, config.squid.check_url, config.rabbitmq.use_ssl) == ("", "", False)
    assert (config.rabbitmq.amqp_server_url, config.general.interval) == ("b.example.org", 30.0)
    assert "amqp_client_cert" not in minimal.read_text()


def test_squid_template_is_accepted_by_squid(rendered):
    """squid -k parse accepts what shoal::squid writes (and rejects a broken file, so the check is real)."""
    squid = require("squid")
    conf = rendered / "squid.conf"
    assert "http_port 3999" in conf.read_text() and "collapsed_forwarding on" in conf.read_text()
    ok = run([squid, "-k", "parse", "-f", str(conf)], check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = rendered / "broken.conf"
    broken.write_text(conf.read_text().replace("http_port 3999", "http_port_typo 3999"))
    assert run([squid, "-k", "parse", "-f", str(broken)], check=False).returncode != 0

    # No destination list: any origin, still only for the client networks.
    conf = rendered / "squid_open.conf"
    assert "dstdomain" not in conf.read_text() and "http_access allow clients\n" in conf.read_text()
    assert run([squid, "-k", "parse", "-f", str(conf)], check=False).returncode == 0


def test_repo_template(rendered):
    """The class shoal writes the repository file a signed `make repo` writes (compared in test_deploy_repo)."""
    text = (rendered / "shoal.repo").read_text()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    sections = {s: dict(parser.items(s)) for s in parser.sections()}
    assert sections == {
        "shoal": {"name": "Shoal", "baseurl": "https://shoal.example.org/repo/prod", "enabled": "1",
                  "gpgcheck": "1", "repo_gpgcheck": "1", "gpgkey": "https://shoal.example.org/repo/RPM-GPG-KEY-shoal"},
        "shoal-dev": {"name": "Shoal (development builds)", "baseurl": "https://shoal.example.org/repo/dev",
                      "enabled": "0", "gpgcheck": "1", "repo_gpgcheck": "1",
                      "gpgkey": "https://shoal.example.org/repo/RPM-GPG-KEY-shoal"},
    }
