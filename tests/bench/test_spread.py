"""bench/spread.py end to end at its quick size: the before/after shares it publishes are computed."""
from support import pacrun
from support.tools import requires
from test_smoke import run_bench


@requires("pacparser", available=pacrun.available(), detail="python3-pacparser for /usr/bin/python3")
def test_spread(tmp_path):
    data = run_bench("spread", tmp_path)
    before, client, pac = data["rows"]
    assert before["max_over_fair"] == 4.0            # every worker on the least loaded squid
    assert client["max_over_fair"] < 2 and pac["max_over_fair"] < 2
    assert len(pac["failover_of_squid1"]) >= 2       # a failed squid's workers do not all go to one
