"""Client tests: the portable unittest suite runs under every interpreter found (test_portable.py),
so pytest itself must not collect it; the interpreters that ran are listed in the terminal summary."""
import os
import sys

import pytest

# Import the client from the source tree even if the venv's editable install is missing.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "shoal-client"))

collect_ignore = ["portable"]

PORTABLE_RUNS = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def portable_runs(request):
    """List of (interpreter label, outcome, summary) the portable-suite runs append to."""
    return request.config.stash.setdefault(PORTABLE_RUNS, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    runs = config.stash.get(PORTABLE_RUNS, [])
    if not runs:
        return
    terminalreporter.section("shoal-client portable suite: interpreters")
    for label, outcome, summary in runs:
        terminalreporter.write_line("%-7s %-45s %s" % (outcome, label, summary))
