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
    # default_squid_proxy has no default value to show: the sample has it commented out.
    sample_keys = re.findall(r"^#?(\w+) =", read(SAMPLE), re.M)
    assert sorted(sample_keys) == sorted(ClientConfig.FIELDS)
    for key in ClientConfig.FIELDS:
        assert re.search(rf"^\| `{key}` \|", doc, re.M), key
    sample = load_config(SAMPLE)
    defaults = ClientConfig()
    assert all(getattr(sample, key) == getattr(defaults, key) for key in ClientConfig.FIELDS)


def test_cron_line_is_shown():
    """The doc shows the shipped cron alternative verbatim (with its splay) and the timer."""
    cron = os.path.join(os.path.dirname(SAMPLE), "shoal-client.cron")
    (shipped,) = [line[1:] for line in read(cron).splitlines() if line.startswith("#*/")]
    assert shipped in read(DOC).splitlines()
    assert "systemctl enable --now shoal-client.timer" in read(DOC)


def test_every_option_is_in_the_command_line_table():
    from shoal_client.main import build_parser

    section = read(DOC).split("## Command line", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(--?[a-z][a-z-]*)", "\n".join(l.split(" | ")[0] for l in section.splitlines()
                                                               if l.startswith("| `"))))
    options = {opt for action in build_parser()._actions for opt in action.option_strings}
    assert options == documented


def test_upstream_flags_are_all_accepted():
    """Every flag upstream shoal-client 1.0.4 and HEAD define (optparse add_option) is one of ours."""
    from shoal_client.main import build_parser

    upstream = {"-s", "--server", "-d", "--dump", "-f", "--frontier", "-n", "--squids", "--caches", "-k",
                "--skip-broadcast", "-o", "--force-server"}
    options = {opt for action in build_parser()._actions for opt in action.option_strings}
    assert upstream <= options
