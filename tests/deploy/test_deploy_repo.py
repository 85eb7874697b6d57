"""`make repo`: yum repositories that dnf reads over HTTP, shoal.repo, channels and GPG signing."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from deploy_helpers import PACKAGES, ROOT, dnf, make_env, run
from support.tools import in_ci, requires

MAKE_REPO = str(ROOT / "repo" / "make-repo.sh")

pytestmark = [requires("dnf"), requires("createrepo_c"), requires("rpm")]


def repoquery(work: Path, *args: str, **kw) -> List[str]:
    out = dnf(work, "-q", "repoquery", "--qf", "%{name} %{version} %{arch} %{repoid}", *args, **kw).stdout
    return sorted(line for line in out.splitlines() if line.strip())


def read_repo_file(path: Path) -> Dict[str, Dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return {section: dict(parser.items(section)) for section in parser.sections()}


def test_make_repo_layout_and_repo_file(built):
    for channel in ("prod", "dev"):
        assert (built.repo / channel / "repodata" / "repomd.xml").is_file()
        assert sorted(p.name for p in (built.repo / channel).glob("*.rpm")) == \
            [p.name for p in built.binary_rpms()]  # releases go to both; no SRPMs in the yum repos
    sections = read_repo_file(built.repo / "shoal.repo")
    assert list(sections) == ["shoal", "shoal-dev"]
    assert sections["shoal"]["baseurl"] == f"{built.url}/prod" and sections["shoal"]["enabled"] == "1"
    assert sections["shoal-dev"]["baseurl"] == f"{built.url}/dev" and sections["shoal-dev"]["enabled"] == "0"
    # Built without a key: says so rather than pretending.
    assert sections["shoal"]["gpgcheck"] == "0" and "not signed" in (built.repo / "shoal.repo").read_text()


def expected_packages(built) -> List[str]:
    """"name version noarch {repo}" for every binary RPM `make rpms` built."""
    rows = [run(["rpm", "-qp", "--nosignature", "--qf", "%{NAME} %{VERSION} noarch", str(p)]).stdout
            for p in built.binary_rpms()]
    return sorted(row + " {repo}" for row in rows)


def test_dnf_reads_the_repositories_over_http(built, tmp_path):
    expected = expected_packages(built)
    for channel in ("prod", "dev"):
        found = repoquery(tmp_path / channel, f"--repofrompath=shoal-{channel},{built.url}/{channel}",
                          f"--repo=shoal-{channel}", "--setopt=*.gpgcheck=0")
        assert found == [line.format(repo=f"shoal-{channel}") for line in expected]
    # Requirements travel in the metadata: dnf would pull pika and netifaces for the agent.
    requires = dnf(tmp_path / "req", "-q", f"--repofrompath=shoal,{built.url}/prod", "--repo=shoal",
                   "repoquery", "--requires", "shoal-agent").stdout.split()
    assert "python3-pika" in requires and "python3-netifaces" in requires


def test_shoal_repo_file_points_at_the_repositories(built, tmp_path):
    reposdir = tmp_path / "yum.repos.d"
    reposdir.mkdir()
    shutil.copy(built.repo / "shoal.repo", reposdir / "shoal.repo")
    listing = dnf(tmp_path / "w", "repolist", "--all", reposdir=reposdir).stdout
    rows = {line.split()[0]: line.split()[-1] for line in listing.splitlines()[1:] if line.strip()}
    assert rows == {"shoal": "enabled", "shoal-dev": "disabled"}, listing
    assert repoquery(tmp_path / "w", reposdir=reposdir) == [row.format(repo="shoal") for row in expected_packages(built)]


@pytest.fixture(scope="module")
def gnupg(tmp_path_factory):
    """A throwaway signing key in its own GNUPGHOME (no passphrase); gpg-agent stopped afterwards."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = make_env(GNUPGHOME=str(home))
    run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key",
         "Shoal Test Signing <shoal-test@example.org>", "rsa2048", "sign", "1d"], env=env, timeout=120)
    yield env, "shoal-test@example.org"
    run(["gpgconf", "--kill", "all"], env=env, check=False)


@pytest.fixture
def dnf_keyrings(tmp_path):
    """dnf starts a gpg-agent per repository keyring it verifies with; stop them afterwards."""
    yield
    for pubring in tmp_path.glob("**/pubring"):
        if pubring.is_dir():
            run(["gpgconf", "--homedir", str(pubring), "--kill", "all"], check=False)


def test_signed_repository(built, www, gnupg, tmp_path, dnf_keyrings):
    env, key = gnupg
    root, base = www
    out = root / "signed"
    url = f"{base}/signed"
    before = {p.name: p.read_bytes() for p in built.dist.glob("*.rpm")}
    run([MAKE_REPO], env={**env, "SHOAL_DIST_DIR": str(built.dist), "SHOAL_REPO_DIR": str(out),
                          "SHOAL_REPO_URL": url, "SHOAL_GPG_KEY": key})
    # dist/ is left as built; the repository copies are signed.
    assert {p.name: p.read_bytes() for p in built.dist.glob("*.rpm")} == before

    sections = read_repo_file(out / "shoal.repo")
    for section in sections.values():
        assert (section["gpgcheck"], section["repo_gpgcheck"]) == ("1", "1")
        assert section["gpgkey"] == f"{url}/RPM-GPG-KEY-shoal"

    # Puppet's class shoal writes the same file for the same URL.
    if shutil.which("puppet") or in_ci():
        rendered = run(["puppet", "epp", "render", str(ROOT / "puppet/shoal/templates/shoal.repo.epp"), "--values",
                        f"{{baseurl => '{url}', gpgcheck => true, gpgkey => '{url}/RPM-GPG-KEY-shoal',"
                        " enable_dev => false}"], env=make_env(HOME=str(tmp_path))).stdout
        (tmp_path / "puppet.repo").write_text(rendered)
        assert read_repo_file(tmp_path / "puppet.repo") == sections

    # rpm checks each package against the exported public key (and fails without it).
    dbpath = tmp_path / "rpmdb"
    rpms = sorted(str(p) for p in (out / "prod").glob("*.rpm"))
    assert len(rpms) == len(built.binary_rpms())
    unchecked = run(["rpm", "--dbpath", str(dbpath), "-K", *rpms], check=False)
    assert unchecked.returncode != 0
    run(["rpm", "--dbpath", str(dbpath), "--import", str(out / "RPM-GPG-KEY-shoal")])
    checked = run(["rpm", "--dbpath", str(dbpath), "-K", *rpms]).stdout
    assert checked.count("digests signatures OK") == len(rpms), checked

    # dnf through shoal.repo: fetches the key over HTTP, verifies repomd.xml.asc, lists the packages.
    reposdir = tmp_path / "yum.repos.d"
    reposdir.mkdir()
    shutil.copy(out / "shoal.repo", reposdir / "shoal.repo")
    assert repoquery(tmp_path / "ok", reposdir=reposdir) == [row.format(repo="shoal") for row in expected_packages(built)]

    # Metadata changed after signing is refused.
    repomd = out / "prod" / "repodata" / "repomd.xml"
    repomd.write_text(repomd.read_text().replace("</repomd>", "<!-- tampered --></repomd>"))
    refused = dnf(tmp_path / "tampered", "-q", "repoquery", reposdir=reposdir, check=False)
    assert refused.returncode != 0, refused.stdout
    assert "signature" in (refused.stdout + refused.stderr).lower() or "gpg" in (refused.stdout + refused.stderr).lower()


DEV_SPEC = """\
Name: shoal-client
Version: 1.1.0.dev1
Release: 1
Summary: development build stand-in
License: Apache-2.0
BuildArch: noarch
%description
A pre-release build, to check that make-repo.sh keeps it out of prod.
%files
"""


def test_prerelease_goes_to_dev_only_and_update_keeps_history(built, www, tmp_path):
    root, base = www
    dist = tmp_path / "dist"
    dist.mkdir()
    for path in built.binary_rpms():
        shutil.copy(path, dist)
    out = root / "channels"
    env = make_env(SHOAL_DIST_DIR=str(dist), SHOAL_REPO_DIR=str(out), SHOAL_REPO_URL=f"{base}/channels")
    run([MAKE_REPO], env=env)

    (tmp_path / "SPECS").mkdir()
    (tmp_path / "SPECS" / "dev.spec").write_text(DEV_SPEC)
    run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {tmp_path}", str(tmp_path / "SPECS" / "dev.spec")])
    shutil.copy(next((tmp_path / "RPMS" / "noarch").glob("*.rpm")), dist)
    second = run([MAKE_REPO], env=env)  # metadata exists now: createrepo_c --update
    count = len(built.binary_rpms())
    assert f"dev ({count + 1} packages)" in second.stdout and f"prod ({count} packages)" in second.stdout

    def versions(channel: str) -> List[str]:
        return sorted(line.split()[1] for line in repoquery(
            tmp_path / f"q-{channel}", f"--repofrompath=c,{base}/channels/{channel}", "--repo=c",
            "--setopt=*.gpgcheck=0", "--showduplicates", "shoal-client"))

    assert versions("dev") == sorted([built.versions["client"], "1.1.0.dev1"])
    assert versions("prod") == [built.versions["client"]]
