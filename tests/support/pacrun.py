"""Evaluate PAC files with pacparser, the library CVMFS and Frontier use, and read answers as CVMFS does.

Debian's python3-pacparser is built for the system Python only, so evaluation runs in a
/usr/bin/python3 subprocess: one per batch of (PAC, URL, host) cases.
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import List, Sequence, Tuple

SYSTEM_PYTHON = "/usr/bin/python3"
RUNNER = r"""
import json, sys
import pacparser
out = []
for pac, url, host in json.load(sys.stdin):
    pacparser.init()
    try:
        pacparser.parse_pac_string(pac)
        out.append(pacparser.find_proxy(url, host))
    except Exception as err:  # pacparser raises plain Exceptions
        out.append({"error": str(err)})
    finally:
        pacparser.cleanup()
json.dump(out, sys.stdout)
"""

STRATUM1 = ("http://cvmfs-stratum-one.cern.ch:8000/cvmfs/atlas.cern.ch/.cvmfspublished", "cvmfs-stratum-one.cern.ch")
OPENHTC = ("http://s1fnal-cvmfs.openhtc.io/cvmfs/cms.cern.ch/.cvmfspublished", "s1fnal-cvmfs.openhtc.io")
FRONTIER = ("http://cmsfrontier.cern.ch:8000/FrontierProd/Frontier?type=frontier_request:1:DEFAULT",
            "cmsfrontier.cern.ch")
ATLAS_FRONTIER = ("http://atlasfrontier-ai.cern.ch:8000/atlr/Frontier", "atlasfrontier-ai.cern.ch")
OTHER = ("http://repo.example.org/packages/x.rpm", "repo.example.org")


def available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import pacparser"], capture_output=True, timeout=30)
    return probe.returncode == 0


def find_proxies(cases: Sequence[Tuple[str, str, str]]) -> List[object]:
    """pacparser's FindProxyForURL answer for each (pac, url, host); {"error": ...} where it fails."""
    out = subprocess.run([SYSTEM_PYTHON, "-c", RUNNER], input=json.dumps(list(cases)), capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def find_proxy(pac: str, url: str, host: str) -> object:
    return find_proxies([(pac, url, host)])[0]


def cvmfs_chain(pac_answer: str) -> str:
    """CVMFS's reading of a PAC answer (cvmfs/wpad.cc PacProxy2Cvmfs): items split at ``;``,
    ``DIRECT`` kept, ``PROXY x`` becomes ``x`` with ``http://`` prepended when it has no scheme,
    other kinds (SOCKS, NONE ...) are dropped with an error; the rest joined with ``;``."""
    out = []
    for item in pac_answer.split(";"):
        item = item.strip()
        if item == "DIRECT":
            out.append("DIRECT")
        elif item.startswith("PROXY "):
            proxy = item[len("PROXY "):].strip()
            out.append(proxy if "://" in proxy else "http://" + proxy)
    return ";".join(out)
