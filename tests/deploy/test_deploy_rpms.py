"""`make rpms`: three noarch RPMs and their SRPMs, what they contain, require and run, and where files land."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from deploy_helpers import DIST_TAG, PACKAGES, ROOT, THIRD_PARTY, make_env, package_version, run
from support.tools import require

SITELIB_RE = re.compile(r"^/usr/lib/python3\.\d+/site-packages/")
UNITS = {"server": "shoal-server.service", "agent": "shoal-agent.service"}

def rpm_query(path: Path, *args: str) -> str:
    return run(["rpm", "-qp", "--nosignature", *args, str(path)]).stdout


def files_of(path: Path) -> Dict[str, Dict[str, str]]:
    """File name -> flags (c = config, n = noreplace), mode, owner and group, from the package header."""
    out = rpm_query(path, "--qf",
                    "[%{FILENAMES}\t%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\n]")
    files = {}
    for line in out.splitlines():
        name, flags, perms, user, group = line.split("\t")
        files[name] = {"flags": flags, "perms": perms, "user": user, "group": group}
    return files


def requires_of(path: Path) -> Set[str]:
    return {line.strip() for line in rpm_query(path, "--requires").splitlines() if line.strip()}


def test_make_rpms_builds_el9_rpms_and_srpms(built):
    names = sorted(p.name for p in built.dist.glob("*.rpm"))
    expected = sorted([f"shoal-{s}-{package_version(s)}-1{DIST_TAG}.{kind}.rpm" for s in PACKAGES
                       for kind in ("noarch", "src")] + [built.rpm("server-httpd").name] +
                      [built.third_party(n, kind).name for n in THIRD_PARTY for kind in ("noarch", "src")])
    assert names == expected, built.output
    # Third-party modules: the SRPM carries the unmodified PyPI sdist of the spec's version.
    for name, version in THIRD_PARTY.items():
        sources = rpm_query(built.third_party(name, "src"), "--list").split()
        assert any(re.fullmatch(rf"[\w.]+-{re.escape(version)}\.tar\.gz", s) for s in sources), sources
        requires = requires_of(built.third_party(name))
        assert "python(abi) = 3.9" in requires, requires
    for short in PACKAGES:
        info = rpm_query(built.rpm(short), "--qf", "%{NAME} %{VERSION} %{ARCH} %{LICENSE} %{PAYLOADCOMPRESSOR}")
        # The version is the package's __version__; xz so that every rpm still in use reads it.
        assert info == f"shoal-{short} {package_version(short)} noarch Apache-2.0 xz"
        # The SRPM carries the sdist, the spec (with the version fixed in it) and the conf/ sources.
        srpm = built.rpm(short, "src")
        sources = rpm_query(srpm, "--list").split()
        assert f"shoal-{short}.spec" in sources and "LICENSE" in sources
        assert any(re.fullmatch(rf"shoal[_-]{short}-{re.escape(package_version(short))}\.tar\.gz", s) for s in sources)


def test_file_lists(built):
    server, agent, client = (files_of(built.rpm(s)) for s in PACKAGES)

    # Commands in /usr/bin, the packages in site-packages.
    for short, files in (("server", server), ("agent", agent), ("client", client)):
        assert f"/usr/bin/shoal-{short}" in files
        assert files[f"/usr/bin/shoal-{short}"]["perms"] == "-rwxr-xr-x"
        modules = [f for f in files if SITELIB_RE.match(f) and f.endswith(f"/shoal_{short}/__init__.py")]
        assert len(modules) == 1, modules
        assert any(re.search(rf"/shoal_{short}-[^/]+\.dist-info/METADATA$", f) for f in files)
        assert not [f for f in files if "/build/" in f or f.endswith(".pyc") and "__pycache__" not in f]

    assert "/usr/bin/shoal-ca" in server  # the private CA tool ships with the server

    # Configuration under /etc/shoal, %config(noreplace); secrets-bearing files not world-readable.
    for files, name, mode, group in ((server, "shoal_server.conf", "-rw-r-----", "shoal"),
                                     (agent, "shoal_agent.conf", "-rw-r-----", "shoal"),
                                     (client, "shoal_client.conf", "-rw-r--r--", "root")):
        entry = files[f"/etc/shoal/{name}"]
        assert entry["flags"] == "cn", entry
        assert (entry["perms"], entry["user"], entry["group"]) == (mode, "root", group)
    assert agent["/etc/logrotate.d/shoal-agent"]["flags"] == "cn"
    assert server["/etc/logrotate.d/shoal-server"]["flags"] == "cn"
    assert client["/etc/cron.d/shoal-client"]["flags"] == "cn"
    # Apache mode is a subpackage: shoal-server alone never makes httpd serve Shoal.
    assert not [f for f in server if f.startswith("/etc/httpd")]
    httpd = files_of(built.rpm("server-httpd"))
    assert list(httpd) == ["/etc/httpd/conf.d/shoal.conf"] and httpd["/etc/httpd/conf.d/shoal.conf"]["flags"] == "cn"

    # systemd units for the two daemons, a oneshot service and its timer for the client.
    assert "/usr/lib/systemd/system/shoal-server.service" in server
    assert "/usr/lib/systemd/system/shoal-agent.service" in agent
    assert {f for f in client if "systemd" in f} == {"/usr/lib/systemd/system/shoal-client.service",
                                                     "/usr/lib/systemd/system/shoal-client.timer"}
    # EL 9's python3 (3.9) paths, whatever python built them.
    for files in (server, agent, client):
        assert not [f for f in files if re.match(r"/usr/lib/python3\.(?!9/)", f)]

    # mod_wsgi script and static files for Apache; the server's state directory.
    assert "/usr/share/shoal-server/shoal.wsgi" in server
    assert "/usr/share/shoal-server/static/status.css" in server
    assert server["/var/lib/shoal-server"]["perms"].startswith("drwxr-x---")
    assert server["/var/lib/shoal-server"]["user"] == "shoal"

    # The agent's shared modules are real files in the package, not symlinks into shoal-server.
    shared = [f for f in agent if f.endswith(("/shoal_agent/amqp.py", "/shoal_agent/inifile.py",
                                               "/shoal_agent/logsetup.py"))]
    assert len(shared) == 3 and all(agent[f]["perms"].startswith("-") for f in shared)


def test_requires(built):
    server, agent, client = (requires_of(built.rpm(s)) for s in PACKAGES)
    assert {"python3", "python3-pika", "python3-netifaces", "python(abi) = 3.9"} <= agent
    # The scriptlets' systemctl, declared as EL's %{systemd_requires} does (also on Debian's rpmbuild).
    assert all("systemd" in r for r in (server, agent, client))
    assert {"python3", "python3-pika", "python3-webpy", "python3-maxminddb", "python(abi) = 3.9"} <= server
    assert "python3-webpy" not in agent and "python3-netifaces" not in server
    # The client needs Python and nothing else (rpm adds rpmlib(), config() and the scriptlets' shell).
    extra = {r for r in client if not re.match(r"(rpmlib\(|config\(shoal-client\)|python\(abi\) = 3\.9$)", r)}
    assert extra <= {"python3", "/usr/bin/python3", "/bin/sh", "systemd"}, extra
    # Weak dependencies: the GeoLite2 database is recommended, not forced; nothing pulls in httpd.
    recommends = rpm_query(built.rpm("server"), "--recommends").split("\n")
    assert "geolite2-city" in recommends and "python3-mod_wsgi" not in recommends
    assert not [r for r in server if "httpd" in r or "mod_wsgi" in r]
    httpd = requires_of(built.rpm("server-httpd"))
    assert {"httpd", "python3-mod_wsgi", f"shoal-server = {built.versions['server']}-1{DIST_TAG}"} <= httpd


def test_scriptlets(built):
    agent = rpm_query(built.rpm("agent"), "--scripts")
    # %pre creates the service account; %post its state and log directories, owned by it.
    assert re.search(r"preinstall scriptlet.*\n(.*\n)*.*useradd -r -g shoal .*shoal\n", agent), agent
    post = agent.split("postinstall scriptlet", 1)[1].split("scriptlet", 1)[0]
    assert "install -d -m 0750 -o shoal -g shoal /var/lib/shoal-agent /var/log/shoal-agent" in post
    for script, (short, unit) in ((agent, ("agent", "shoal-agent.service")),
                                  (rpm_query(built.rpm("server"), "--scripts"), ("server", "shoal-server.service"))):
        parts = dict(re.findall(r"(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=\n\w+ scriptlet|\Z)", script, re.S))
        # Fedora/EL behaviour: preset on first install, disable+stop on removal, restart on upgrade.
        assert re.search(rf"\$1 -eq 1 .*preset {unit}", parts["postinstall"]), parts
        assert re.search(rf"\$1 -eq 0 .*disable --now {unit}", parts["preuninstall"]), parts
        assert re.search(rf"\$1 -ge 1 .*try-restart {unit}", parts["postuninstall"]), parts
    client = rpm_query(built.rpm("client"), "--scripts")
    assert re.search(r"\$1 -eq 1 .*preset shoal-client.timer", client), client


def test_syntax_of_shipped_scriptlets(built):
    """The scriptlets are valid POSIX shell (sh -n), as rpm will run them."""
    for short in ("server", "agent", "client", "server-httpd"):
        script = rpm_query(built.rpm(short), "--scripts")
        for body in re.split(r"\w+ scriptlet \(using /bin/sh\):\n", script)[1:]:
            proc = subprocess.run(["sh", "-n"], input=body, text=True, capture_output=True)
            assert proc.returncode == 0, (body, proc.stderr)


@pytest.fixture(scope="module")
def scratch_root(built, tmp_path_factory) -> Path:
    """All three RPMs installed into an empty root by rpm itself (no deps, no scriptlets: no shell there)."""
    root = tmp_path_factory.mktemp("rpmroot")
    rpms = [str(p) for p in built.binary_rpms()]
    run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--initdb"])
    run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts", "--nosignature",
         "-i", *rpms])
    return root


def installed_sitelib(root: Path) -> Path:
    (sitelib,) = list(root.glob("usr/lib/python3.*/site-packages"))
    return sitelib


def venv_sitelib() -> str:
    """This venv's site-packages (pika & co for the installed code to import)."""
    import sysconfig
    return sysconfig.get_path("purelib")


def test_rpm_installs_files_into_scratch_root(built, scratch_root):
    out = run(["rpm", "--root", str(scratch_root), "--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NAME}\n"]).stdout
    assert sorted(out.split()) == sorted(["shoal-agent", "shoal-client", "shoal-server", "shoal-server-httpd",
                                          *THIRD_PARTY])
    for path in ("usr/bin/shoal-server", "usr/bin/shoal-agent", "usr/bin/shoal-client",
                 "etc/shoal/shoal_server.conf", "etc/shoal/shoal_agent.conf", "etc/shoal/shoal_client.conf",
                 "usr/lib/systemd/system/shoal-server.service", "usr/lib/systemd/system/shoal-agent.service",
                 "etc/httpd/conf.d/shoal.conf", "etc/logrotate.d/shoal-agent", "usr/share/shoal-server/shoal.wsgi"):
        assert (scratch_root / path).is_file(), path
    assert (scratch_root / "usr/lib/python3.9/site-packages/web/__init__.py").is_file()
    for cmd in ("shoal-server", "shoal-agent", "shoal-client"):
        first = (scratch_root / "usr/bin" / cmd).read_text().splitlines()[0]
        assert first == "#!/usr/bin/python3", (cmd, first)  # not the build host's venv
    assert oct((scratch_root / "etc/shoal/shoal_agent.conf").stat().st_mode & 0o777) == "0o640"
    # rpm -V: what landed is what the header says (digests, sizes, modes; owners may differ here).
    verify = run(["rpm", "--root", str(scratch_root), "--dbpath", "/var/lib/rpm", "-V", "--nodeps", "--nouser",
                  "--nogroup",
                  "shoal-server", "shoal-agent", "shoal-client"], check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_installed_commands_run(built, scratch_root):
    sitelib = installed_sitelib(scratch_root)
    # The RPMs' own modules first (shoal_*, and web.py 0.62 from python3-webpy), then the venv's.
    env = {**make_env(), "PYTHONPATH": f"{sitelib}:{venv_sitelib()}", "PYTHONDONTWRITEBYTECODE": "1"}
    for short in ("server", "agent"):
        # The installed code (not the work tree's) runs, with the venv providing pika & co.
        where = run([sys.executable, "-c", f"import shoal_{short}; print(shoal_{short}.__file__)"], env=env).stdout
        assert where.strip().startswith(str(sitelib)), where
        out = run([sys.executable, str(scratch_root / f"usr/bin/shoal-{short}"), "--version"], env=env).stdout
        assert package_version(short) in out
    # The client on the distribution's own python3 with nothing but the standard library.
    system_python = shutil.which("python3", path="/usr/bin")
    if system_python:
        out = run([system_python, "-I", "-c",
                   f"import sys; sys.path.insert(0, {str(sitelib)!r}); sys.argv = ['shoal-client', '--version'];"
                   "from shoal_client.main import main; sys.exit(main())"], env=env, check=False)
        assert out.returncode == 0 and package_version("client") in out.stdout + out.stderr, out


def test_installed_configs_load(built, scratch_root):
    """The shipped sample configs (as the RPMs install them) are accepted by the programs' loaders."""
    from shoal_server.config import load_config as load_server_config
    from shoal_agent.config import load_config as load_agent_config

    server = load_server_config(str(scratch_root / "etc/shoal/shoal_server.conf"))
    # The RPM points the server at EL's GeoLite2 package and at its state directory.
    assert server.general.geoip_database == "/usr/share/GeoIP/GeoLite2-City.mmdb"
    assert server.general.state_dir == "/var/lib/shoal-server"
    load_agent_config(str(scratch_root / "etc/shoal/shoal_agent.conf"))
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(scratch_root / "etc/shoal/shoal_client.conf")
    assert parser.sections()


def test_installed_units_verify(built, scratch_root, tmp_path):
    """systemd-analyze verify finds nothing to say about the units as installed.

    The units are checked on this host's systemd with ExecStart pointed into the scratch root
    (so the command really exists); verify prints a line for every bad or unknown setting.
    """
    require("systemd-analyze")
    for unit in (*UNITS.values(), "shoal-client.service", "shoal-client.timer"):
        text = (scratch_root / "usr/lib/systemd/system" / unit).read_text()
        assert "ExecStart=/usr/bin/" in text or unit.endswith(".timer")
        copy = tmp_path / unit
        copy.write_text(text.replace("ExecStart=/usr/bin/", f"ExecStart={scratch_root}/usr/bin/"))
        proc = run(["systemd-analyze", "--man=no", "verify", str(copy)], check=False)
        assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def _shown(default: object) -> str:
    """A default as the sample config writes it."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ", ".join(default)
    return str(default)


def test_sample_server_config_documents_every_key():
    """conf/shoal_server.conf shows every key of every section, commented out, with its default."""
    import dataclasses

    from shoal_server.config import SCHEMA

    text = (ROOT / "shoal-server" / "conf" / "shoal_server.conf").read_text()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert set(parser.sections()) == set(SCHEMA.sections)
    for section, cls in SCHEMA.sections.items():
        body = re.split(rf"^\[{section}\]$", text, flags=re.M)[1].split("\n[", 1)[0]
        assert not parser.items(section), f"[{section}] sets keys; the sample only documents defaults"
        for field in dataclasses.fields(cls):
            shown = _shown(field.default)
            line = re.search(rf"^# {field.name} =(.*)$", body, re.M)
            assert line, f"[{section}] {field.name} is not documented in shoal_server.conf"
            value = line.group(1).strip()
            if value != shown:  # a spelling of its own (e.g. "auto" for None): it must parse to the default
                parse = field.metadata.get("parse")
                assert parse is not None and parse(value) == field.default, (section, field.name, value, shown)


def test_srpm_rebuilds_without_the_build_script(built, tmp_path):
    """The SRPM is self-contained: `rpmbuild --rebuild` makes the same package, version included."""
    top = tmp_path / "rpmbuild"
    run(["rpmbuild", "--rebuild", "--nodeps", "--quiet", "--define", f"_topdir {top}", "--define", f"dist {DIST_TAG}",
         "--define", "python3_sitelib /usr/lib/python3.9/site-packages",
         "--define", f"python3 {sys.executable}", str(built.rpm("client", "src"))], timeout=180)
    (rebuilt,) = list((top / "RPMS" / "noarch").glob("*.rpm"))
    assert rebuilt.name == built.rpm("client").name
    assert sorted(files_of(rebuilt)) == sorted(files_of(built.rpm("client")))


def test_rpms_for_another_python_version(tmp_path):
    """SHOAL_RPM_PYTHON_VERSION=3.12 and SHOAL_RPM_DIST=.el10 retarget the build (EL 10's python3)."""
    env = make_env(PYTHON=sys.executable, SHOAL_DIST_DIR=str(tmp_path), SHOAL_PACKAGES="client",
                   SHOAL_THIRD_PARTY="", SHOAL_RPM_PYTHON_VERSION="3.12", SHOAL_RPM_DIST=".el10")
    run([str(ROOT / "repo" / "build-rpms.sh")], env=env, timeout=180)
    rpm = tmp_path / f"shoal-client-{package_version('client')}-1.el10.noarch.rpm"
    files = files_of(rpm)
    assert any(f.startswith("/usr/lib/python3.12/site-packages/shoal_client/") for f in files)
    assert not [f for f in files if re.match(r"/usr/lib/python3\.(?!12/)", f)]
    assert "python(abi) = 3.12" in requires_of(rpm)
