"""bench/spread.py end to end at its quick size: the before/after shares it publishes are computed."""
import pytest

from support import pacrun
from test_smoke import run_bench


@pytest.mark.skipif(not pacrun.available(), reason="needs /usr/bin/python3 with python3-pacparser")
def test_spread(tmp_path):
    data = run_bench("spread", tmp_path)
    before, client, pac = data["rows"]
    assert before["max_over_fair"] == 4.0            # every worker on the least loaded squid
    assert client["max_over_fair"] < 2 and pac["max_over_fair"] < 2
    assert len(pac["failover_of_squid1"]) >= 2       # a failed squid's workers do not all go to one
