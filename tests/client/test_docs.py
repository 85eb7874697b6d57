"""docs/client.md, the sample config and the code agree on exit codes and settings."""
from __future__ import annotations

import os
import re

from shoal_client.config import ClientConfig, load_config
from shoal_client.main import EXIT_CODES, Exit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "client.md")
SAMPLE = os.path.join(ROOT, "shoal-client", "conf", "shoal_client.conf")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_exit_code_table_matches_the_code():
    rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", read(DOC), re.M)
    assert [(int(code), name) for code, name in rows] == [(code, name) for code, name, _ in EXIT_CODES]
    assert all(getattr(Exit, name) == code for code, name, _ in EXIT_CODES)


def test_every_setting_is_documented_and_in_the_sample():
    doc = read(DOC)
    sample_keys = re.findall(r"^(\w+) =", read(SAMPLE), re.M)
    assert sorted(sample_keys) == sorted(ClientConfig.FIELDS)
    for key in ClientConfig.FIELDS:
        assert re.search(rf"^\| `{key}` \|", doc, re.M), key
    sample = load_config(SAMPLE)
    defaults = ClientConfig()
    assert all(getattr(sample, key) == getattr(defaults, key) for key in ClientConfig.FIELDS)


def test_cron_line_is_shown():
    assert re.search(r"^\*/\d+ \* \* \* \* root /usr/bin/shoal-client --quiet", read(DOC), re.M)
