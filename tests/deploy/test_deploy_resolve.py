"""`dnf install shoal-server shoal-agent shoal-client` resolves the way it would on an EL 9 site.

tests/deploy/data/el9-manifest.json lists what EL 9 BaseOS/AppStream and EPEL 9 offer (names,
versions, provides, requires, with the sources of each fact). It becomes a stub repository of empty
RPMs, served beside ours; dnf installs into a scratch root (no scriptlets: the stubs have no shell)
with weak dependencies on and off. Leaving one of our own RPMs out must make it fail exactly as a
site would see it, and the requirements EL's Python dependency generator derives from our wheels'
metadata (python3.9dist(...)) must be provided too.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Set

import pytest

from deploy_helpers import ROOT, THIRD_PARTY, dnf, run
from support.tools import requires

MANIFEST = ROOT / "tests" / "deploy" / "data" / "el9-manifest.json"
SHOAL = ["shoal-server", "shoal-agent", "shoal-client"]

pytestmark = [pytest.mark.integration, requires("dnf"), requires("createrepo_c"), requires("rpmbuild"),
              requires("rpm2archive", detail="rpm >= 4.15")]


def manifest() -> Dict:
    return json.loads(MANIFEST.read_text())


STUB_SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: stand-in for the EL 9 package {name} ({repo})
License: stub
BuildArch: noarch
AutoReqProv: no
{tags}
%description
An empty stand-in built from tests/deploy/data/el9-manifest.json.
%files
"""


@pytest.fixture(scope="session")
def stub_repo(tmp_path_factory) -> Path:
    """The manifest as a yum repository of empty RPMs (one rpmbuild per package)."""
    top = tmp_path_factory.mktemp("el9stub")
    repo = top / "repo"
    repo.mkdir()
    for entry in manifest()["packages"]:
        tags = [f"Provides: {p}" for p in entry["provides"]] + [f"Requires: {r}" for r in entry["requires"]]
        spec = top / f"{entry['name']}.spec"
        spec.write_text(STUB_SPEC.format(tags="\n".join(tags), **entry))
        run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top / 'build'}", "--define", "dist %{nil}",
             "--define", f"_rpmdir {repo}", "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.rpm",
             str(spec)])
    run(["createrepo_c", "--quiet", str(repo)])
    return repo


def install(work: Path, repos: Dict[str, str], packages: List[str], weak: bool,
            check: bool = True) -> subprocess.CompletedProcess:
    """dnf install into work/root from exactly these repositories (id -> baseurl)."""
    repo_args = [f"--repofrompath={rid},{url}" for rid, url in repos.items()]
    return dnf(work, *repo_args, *[f"--repo={rid}" for rid in repos], "--nogpgcheck",
               "--setopt=tsflags=noscripts", f"--setopt=install_weak_deps={weak}", "install", *packages, check=check)


def installed(work: Path) -> Dict[str, str]:
    out = run(["rpm", "--root", str(work / "root"), "-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\n"]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def test_manifest_is_closed_and_sourced():
    """Every requirement inside the manifest is provided inside it, and every entry says where it comes from."""
    data = manifest()
    provided: Set[str] = set()
    for entry in data["packages"]:
        provided.add(entry["name"])
        provided.update(re.split(r"\s", p, 1)[0] for p in entry["provides"])
        assert entry["repo"] in {"baseos", "appstream", "epel9"}, entry
        assert entry["sources"] and set(entry["sources"]) <= set(data["sources"]), entry
    for entry in data["packages"]:
        for req in entry["requires"]:
            assert re.split(r"\s", req, 1)[0] in provided, (entry["name"], req)
    # What EL 9 does not have is not smuggled in.
    names = {e["name"] for e in data["packages"]}
    assert not names & set(data["absent"]) - {"python3-geoip2"}


@pytest.mark.parametrize("weak", [True, False], ids=["weak-deps-on", "weak-deps-off"])
def test_dnf_installs_all_three_from_el9_and_our_repository(built, stub_repo, tmp_path, weak):
    repos = {"el9": stub_repo.as_uri(), "shoal": f"{built.url}/prod"}
    install(tmp_path, repos, SHOAL, weak)
    got = installed(tmp_path)
    for short in ("server", "agent", "client"):
        assert got[f"shoal-{short}"] == f"{built.versions[short]}-1.el9"
    # What EL 9 lacks came from our repository, the rest from the EL 9/EPEL 9 stand-ins.
    assert got["python3-webpy"].startswith(THIRD_PARTY["python3-webpy"])
    assert got["python3-pika"].startswith(THIRD_PARTY["python3-pika"])
    assert {"python3-cheroot", "python3-numpy", "python3-netifaces", "python3-maxminddb", "systemd"} <= set(got)
    # Weak dependencies: the GeoLite2 database only when they are on; never httpd or mod_wsgi.
    assert ("geolite2-city" in got) is weak
    assert not {"httpd", "python3-mod_wsgi", "shoal-server-httpd"} & set(got)
    assert "python3-geoip2" not in got


def test_apache_mode_resolves(built, stub_repo, tmp_path):
    install(tmp_path, {"el9": stub_repo.as_uri(), "shoal": f"{built.url}/prod"}, ["shoal-server-httpd"], weak=False)
    got = installed(tmp_path)
    assert {"shoal-server", "httpd", "python3-mod_wsgi"} <= set(got)


@pytest.mark.parametrize("left_out", ["python3-webpy", "python3-pika"])
def test_without_our_third_party_rpm_dnf_fails_as_a_site_would(built, stub_repo, tmp_path, left_out):
    """The test can fail: our repository without one of the modules EL 9 lacks does not resolve."""
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in built.binary_rpms():
        if not path.name.startswith(left_out + "-"):
            shutil.copy(path, partial)
    run(["createrepo_c", "--quiet", str(partial)])
    proc = install(tmp_path / "w", {"el9": stub_repo.as_uri(), "shoal": partial.as_uri()}, SHOAL, weak=True,
                   check=False)
    assert proc.returncode != 0
    assert f"nothing provides {left_out}" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _payload_metadata(rpm: Path, work: Path) -> str:
    """The wheel METADATA inside an RPM's payload."""
    import tarfile

    work.mkdir()
    archive = work / "payload.tgz"
    with open(archive, "wb") as out:  # rpm2archive (rpm >= 4.15): the payload as a tar, no cpio needed
        subprocess.run(["rpm2archive", "-"], stdin=open(rpm, "rb"), stdout=out, check=True)
    with tarfile.open(archive) as tf:
        (member,) = [m for m in tf.getmembers() if m.name.endswith(".dist-info/METADATA")]
        return tf.extractfile(member).read().decode()


def test_python_dependency_generator_requirements_are_provided(built, tmp_path):
    """EL's generator adds python3.9dist(NAME) >= V for each Requires-Dist; EL 9, EPEL 9 or we provide each."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    provides: Dict[str, str] = {}
    for entry in manifest()["packages"]:
        for p in entry["provides"]:
            m = re.fullmatch(r"python3\.9dist\(([^)]+)\) = (\S+)", p)
            if m:
                provides[m.group(1)] = m.group(2)
    for path in built.binary_rpms():
        for line in run(["rpm", "-qp", "--nosignature", "--provides", str(path)]).stdout.splitlines():
            m = re.fullmatch(r"python3\.9dist\(([^)]+)\) = (\S+)", line.strip())
            if m:
                provides[m.group(1)] = m.group(2)
    checked = 0
    for path in built.binary_rpms():
        if "-httpd-" in path.name:
            continue
        text = _payload_metadata(path, tmp_path / path.name)
        for line in re.findall(r"^Requires-Dist: (.+)$", text, re.M):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": "", "python_version": "3.9"}):
                continue  # an extra (legacy-geoip, geolite2): not generated as a requirement
            name = re.sub(r"[-_.]+", "-", req.name).lower()
            assert name in provides, f"{path.name}: nothing on EL 9 provides python3.9dist({name})"
            assert req.specifier.contains(Version(provides[name]), prereleases=True), \
                f"{path.name} wants {req}, EL 9 has {name} {provides[name]}"
            checked += 1
    assert checked >= 8  # server 6 + agent 2 + web.py's cheroot, at least


def test_srpm_build_requires_resolve_on_el9(built, stub_repo, tmp_path):
    """Every SRPM's BuildRequires (e.g. no `python3-setuptools >= 61`: EL 9 has 53) installs from EL 9 alone,
    as a mock or koji build root would need."""
    wanted: Set[str] = set()
    for srpm in built.dist.glob("*.src.rpm"):
        for line in run(["rpm", "-qpR", "--nosignature", str(srpm)]).stdout.splitlines():
            if line.strip() and not line.startswith("rpmlib("):
                wanted.add(line.strip())
    assert "python3-setuptools" in wanted and "python3-pip" in wanted
    install(tmp_path, {"el9": stub_repo.as_uri()}, sorted(wanted), weak=False)
    got = installed(tmp_path)
    assert got["python3-setuptools"].startswith("53.0.0") and got["python3-pip"].startswith("21.2.3")
    # A spec asking for what EL 9 does not have fails there the same way.
    refused = install(tmp_path / "too-new", {"el9": stub_repo.as_uri()}, ["python3-setuptools >= 61"], weak=False,
                      check=False)
    assert refused.returncode != 0
