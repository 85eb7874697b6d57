"""Heartbeats and config files exactly as upstream hep-gc/shoal releases build them (tests/compat/).

Each fixture in ``tests/compat/fixtures/*.json`` holds the body one upstream agent release
publishes, with ``sources`` citing the tag, file and lines it comes from, the value ``types``
that matter (``"max_load": "122000"`` is a string because it is read with ConfigParser.get),
the ``amqp`` shape of the publish and what our server is expected to ``expect`` of it.
"""
from __future__ import annotations

import glob
import json
import os
import time
import uuid as uuidlib
from typing import Any, Dict, List, Optional

COMPAT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "compat")
FIXTURE_DIR = os.path.join(COMPAT_DIR, "fixtures")
CONFIG_DIR = os.path.join(COMPAT_DIR, "configs")
# Oldest first: the release tags of hep-gc/shoal whose agents are in the field.
RELEASES = ("0.7.1", "shoal-agent-0.9.5", "agent-0.9.9", "shoal-agent-1.0.2", "HEAD")


def fixture_names() -> List[str]:
    """Every fixture's name (the file name without .json), sorted."""
    return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(FIXTURE_DIR, "*.json")))


def load_fixture(name: str) -> Dict[str, Any]:
    """The whole fixture: release, case, sources, types, amqp, body, expect."""
    with open(os.path.join(FIXTURE_DIR, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def agent_body(name: str, now: Optional[float] = None, fresh_uuid: bool = False,
               **overrides: Any) -> Dict[str, Any]:
    """The fixture's heartbeat with ``timestamp`` set to ``now`` (default: the current time)."""
    body = dict(load_fixture(name)["body"])
    body["timestamp"] = time.time() if now is None else now
    if fresh_uuid:
        body["uuid"] = uuidlib.uuid1().hex  # what every upstream agent does at start-up
    body.update(overrides)
    return body


def encode(body: Dict[str, Any]) -> bytes:
    """Serialise as every upstream agent does: ``json.dumps(data)`` with default separators."""
    return json.dumps(body).encode("utf-8")


def config_path(release: str, program: str, variant: str = "") -> str:
    """``tests/compat/configs/<release>/shoal_<program>[-variant].conf``."""
    name = f"shoal_{program}{'-' + variant if variant else ''}.conf"
    return os.path.join(CONFIG_DIR, release, name)


def config_files(program: str) -> List[str]:
    """Every upstream config file of ``program`` (server, agent or client) in tests/compat/configs."""
    return sorted(glob.glob(os.path.join(CONFIG_DIR, "*", f"shoal_{program}*.conf")))
