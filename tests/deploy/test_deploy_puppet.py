"""The Puppet module `shoal`: validates, lints clean, compiles, and renders files the programs accept."""
from __future__ import annotations

import configparser
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from deploy_helpers import ROOT, make_env, run
from support.tools import require, requires

MODULE = ROOT / "puppet" / "shoal"
# A test stand-in for the yumrepo type, which Debian's puppet lacks (see its comment).
YUMREPO_STUB = Path(__file__).resolve().parent / "puppet_stubs" / "yumrepo_stub"

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
    "cron_on": ("shoal-client.cron.epp", "{ enabled => true }"),
    "cron_off": ("shoal-client.cron.epp", "{ enabled => false }"),
    "shoal_client.conf": ("shoal_client.conf.epp", """{
      server_url => 'http://shoal.example.org/nearest', cvmfs_config => '@DIR@/default.local'}"""),
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


def puppet_apply(tmp_path: Path, site: str, *flags: str, stub: bool = False) -> subprocess.CompletedProcess:
    """`puppet apply` of ``site`` with the module (and the yumrepo stand-in if ``stub``), state in tmp_path."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "shoal").symlink_to(MODULE)
    if stub:
        (modules / "yumrepo_stub").symlink_to(YUMREPO_STUB)
    (tmp_path / "site.pp").write_text(site)
    return run(["puppet", "apply", "--detailed-exitcodes", "--color=false", *flags, f"--modulepath={modules}",
                *isolated_dirs(tmp_path), str(tmp_path / "site.pp")], env=puppet_env(tmp_path), check=False,
               timeout=240)


def errors(out: str) -> List[str]:
    return [line for line in out.splitlines() if "Error:" in line and "Facter" not in line]


def test_parser_validate_and_lint():
    manifests = sorted(str(p) for p in (MODULE / "manifests").glob("*.pp"))
    assert {Path(m).name for m in manifests} >= {"init.pp", "agent.pp", "squid.pp", "certs.pp", "client.pp"}
    run(["puppet", "parser", "validate", *manifests])
    run(["puppet", "epp", "validate", *sorted(str(p) for p in (MODULE / "templates").glob("*.epp"))])
    require("puppet-lint")
    lint = run(["puppet-lint", "--fail-on-warnings", str(MODULE / "manifests")], check=False)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr


def test_catalog_compiles_and_applies_in_noop(tmp_path):
    """`puppet apply --noop` with every class: the catalog compiles, every resource evaluates, Squid
    starts before the agent although shoal::agent is declared first, and the client timer is on."""
    proc = puppet_apply(tmp_path, """
class { 'shoal':
  baseurl      => 'http://127.0.0.1:9/repo',
  epel_release => 9,
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
class { 'shoal::client':
  server_url => 'http://shoal.example.org/nearest',
}
""", "--noop", "--graph", f"--graphdir={tmp_path / 'graphs'}")
    out = proc.stdout + proc.stderr
    # 0: nothing to change, 2: changes (noop reports them); 4/6: failures.
    assert proc.returncode in (0, 2), out
    assert "Compiled catalog" in out
    for resource in ("File[/etc/yum.repos.d/shoal.repo]", "File[/etc/yum.repos.d/epel.repo]", "Package[shoal-agent]",
                     "File[/etc/shoal/shoal_agent.conf]", "Service[shoal-agent]",
                     "File[/etc/squid/squid.conf]", "Service[squid]", "Package[shoal-client]",
                     "File[/etc/shoal/shoal_client.conf]", "File[/etc/cron.d/shoal-client]"):
        assert resource in out, f"{resource} not in the catalog:\n{out}"
    assert not errors(out), out
    # The timer is the default schedule: noop wants it running.
    assert re.search(r"Service\[shoal-client\.timer\]/ensure: current_value '?stopped'?, should be '?running'?", out), out
    # No certificate content given: the files are not managed (only their paths are configured).
    assert "File[/etc/shoal/agent.key]" not in out
    # Ordering: an explicit edge, and the evaluation order shows it.
    graph = (tmp_path / "graphs" / "relationships.dot").read_text()
    assert '"Service[squid]" -> "Service[shoal-agent]"' in graph
    assert out.index("Service[squid]/ensure") < out.index("Service[shoal-agent]/ensure")
    assert out.index("File[/etc/yum.repos.d/shoal.repo]/ensure") < out.index("Package[shoal-agent]/ensure")


def test_agent_without_shoal_squid_still_compiles_and_orders_a_site_squid(tmp_path):
    """The ordering is a collector: no Squid in the catalog is fine, and a site's frontier-squid is ordered too."""
    proc = puppet_apply(tmp_path, """
service { 'frontier-squid': ensure => running }
class { 'shoal::agent':
  broker_host   => 'broker.example.org',
  manage_repo   => false,
  squid_service => 'frontier-squid',
}
""", "--noop", "--graph", f"--graphdir={tmp_path / 'graphs'}")
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 2) and not errors(out), out
    assert '"Service[frontier-squid]" -> "Service[shoal-agent]"' in (tmp_path / "graphs" / "relationships.dot").read_text()
    assert "yum.repos.d" not in out


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


def test_agent_defaults_are_the_paths_security_md_uses():
    """The files `shoal-ca agent NAME` issues go where docs/security.md installs them, and the module's
    defaults (what the agent config points at) are those paths."""
    security = (ROOT / "docs" / "security.md").read_text()
    # e.g. "install -o shoal -g shoal -m 0600 squid.site.example.key /etc/shoal/agent.key"
    installed = {dest: src for src, _, dest in re.findall(r"install [^\n]*?(\S+\.(crt|key)) (/etc/shoal/\S+)", security)}
    assert set(installed) == {"/etc/shoal/agent.key", "/etc/shoal/agent.crt", "/etc/shoal/ca.crt"}, installed
    for manifest in ("agent.pp", "certs.pp"):
        text = (MODULE / "manifests" / manifest).read_text()
        defaults = dict(re.findall(r"\$(ca_cert|client_cert|client_key)\s+= '([^']+)'", text))
        assert defaults == {"ca_cert": "/etc/shoal/ca.crt", "client_cert": "/etc/shoal/agent.crt",
                            "client_key": "/etc/shoal/agent.key"}, (manifest, defaults)
    # ... and the agent's sample config says the same.
    sample = (ROOT / "shoal-agent" / "conf" / "shoal_agent.conf").read_text()
    for path in installed:
        assert path in sample
    # The example no longer uses grid host certificates the Shoal CA never signed.
    assert "grid-security" not in (MODULE / "manifests" / "agent.pp").read_text()


def test_certificates_issued_by_the_shoal_ca_are_installed_for_the_agent(tmp_path):
    """shoal-ca issues an agent certificate; shoal::certs (a real apply) installs it with the modes
    security.md asks for, the key never shows in Puppet's output, and the agent accepts the files."""
    from support.tlsbroker import issue, make_ca
    from shoal_agent.amqp import RabbitSettings, check_settings, check_tls_files

    ca_dir = tmp_path / "ca"
    ca_cert = make_ca(str(ca_dir))
    ident = issue(str(ca_dir), "agent", "squid.site.example")
    target = tmp_path / "etc-shoal"
    target.mkdir()
    key_text = Path(ident.key).read_text()

    def pp(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    work = tmp_path / "puppet"
    work.mkdir()
    proc = puppet_apply(work, f"""
class {{ 'shoal::certs':
  ca_cert             => '{target}/ca.crt',
  client_cert         => '{target}/agent.crt',
  client_key          => '{target}/agent.key',
  ca_cert_content     => {pp(Path(ca_cert).read_text())},
  client_cert_content => {pp(Path(ident.cert).read_text())},
  client_key_content  => Sensitive({pp(key_text)}),
  key_owner           => 'root',
  key_group           => 'root',
}}
""")
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 2) and not errors(out), out
    assert "PRIVATE KEY" not in out and key_text.splitlines()[1] not in out
    modes = {name: stat.S_IMODE(os.stat(target / name).st_mode) for name in ("ca.crt", "agent.crt", "agent.key")}
    assert modes == {"ca.crt": 0o644, "agent.crt": 0o644, "agent.key": 0o600}
    assert (target / "agent.key").read_text() == key_text
    # The certificate chains to the Shoal CA, and the agent's own start-up checks pass on the files.
    verify = run(["openssl", "verify", "-CAfile", str(target / "ca.crt"), str(target / "agent.crt")], check=False)
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    settings = RabbitSettings(use_ssl=True, amqp_ca_cert=str(target / "ca.crt"),
                              amqp_client_cert=str(target / "agent.crt"), amqp_client_key=str(target / "agent.key"))
    check_settings(settings, "puppet")
    check_tls_files(settings, "puppet")


def test_a_key_given_as_certificate_is_refused_at_compile_time(tmp_path):
    proc = puppet_apply(tmp_path, """
class { 'shoal::certs':
  client_cert         => '/nonexistent/agent.crt',
  client_cert_content => "-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\\n",
}
""", "--noop")
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 2) and "is not a PEM certificate" in out, out


def repo_sections(path: Path) -> Dict[str, Dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return {s: dict(parser.items(s)) for s in parser.sections()}


def test_repositories_with_yumrepo_and_without_are_the_same(tmp_path):
    """class shoal manages EPEL and our repositories: as yumrepo resources where the type exists (here a
    test stand-in with the real attribute names), else as whole files; both give dnf the same repos."""
    site = """
class { 'shoal':
  baseurl      => 'https://shoal.example.org/repo',
  epel_release => 9,
  reposdir     => '@REPOS@',
}
"""
    results = {}
    for kind in ("yumrepo", "file"):
        work = tmp_path / kind
        repos = work / "repos"
        repos.mkdir(parents=True)
        proc = puppet_apply(work, site.replace("@REPOS@", str(repos)), stub=(kind == "yumrepo"))
        out = proc.stdout + proc.stderr
        assert proc.returncode in (0, 2) and not errors(out), out
        assert ("Yumrepo[epel]" in out) == (kind == "yumrepo"), out
        results[kind] = {name: repo_sections(repos / name) for name in ("shoal.repo", "epel.repo")}
    assert results["yumrepo"] == results["file"]
    shoal, epel = results["file"]["shoal.repo"], results["file"]["epel.repo"]["epel"]
    assert shoal["shoal"]["baseurl"] == "https://shoal.example.org/repo/prod" and shoal["shoal-dev"]["enabled"] == "0"
    assert epel == {"name": "Extra Packages for Enterprise Linux 9", "enabled": "1", "gpgcheck": "1",
                    "metalink": "https://mirrors.fedoraproject.org/metalink?repo=epel-9&arch=$basearch",
                    "gpgkey": "https://dl.fedoraproject.org/pub/epel/RPM-GPG-KEY-EPEL-9"}


def test_client_schedule_files(rendered, tmp_path):
    """run_with => timer leaves the cron line commented; cron enables it, with a per-host splay that
    cron (\\% is a literal %) and /bin/sh turn into a sleep of 0-1799 s."""
    on, off = (rendered / "cron_on").read_text(), (rendered / "cron_off").read_text()
    (line,) = [l for l in on.splitlines() if l and not l.startswith("#")]
    assert "#" + line in off.splitlines() and not [l for l in off.splitlines() if l and not l.startswith("#")]
    fields = line.split(None, 6)
    assert fields[:6] == ["*/30", "*", "*", "*", "*", "root"]
    command = fields[6].replace("\\%", "%")  # what cron hands to /bin/sh
    probe = command.replace("sleep ", "echo ", 1).split(" && ")[0]
    seconds = int(run(["sh", "-c", probe]).stdout.strip())
    assert 0 <= seconds < 1800
    assert fields[6].endswith("/usr/bin/shoal-client --config /etc/shoal/shoal_client.conf --quiet")
    # The client reads what shoal::client writes.
    from shoal_client.config import load_config as load_client_config

    conf = rendered / "shoal_client.conf"
    text = conf.read_text()
    assert "shoal_server_url = http://shoal.example.org/nearest" in text
    client = load_client_config(str(conf))
    assert (client.shoal_server_url, client.cvmfs_config) == ("http://shoal.example.org/nearest",
                                                              str(rendered / "default.local"))


def test_client_cron_alternative_stops_the_timer(tmp_path):
    """run_with => cron: the timer is not started (and is disabled), the cron file is managed instead."""
    proc = puppet_apply(tmp_path, """
class { 'shoal::client':
  run_with    => 'cron',
  manage_repo => false,
}
""", "--noop", "--graph", f"--graphdir={tmp_path / 'graphs'}")
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 2) and not errors(out), out
    assert "File[/etc/cron.d/shoal-client]" in out
    assert not re.search(r"Service\[shoal-client\.timer\]/ensure: .*should be '?running", out), out
    resources = (tmp_path / "graphs" / "resources.dot").read_text()
    assert "Service[shoal-client.timer]" in resources  # still managed: switching back and forth is clean
