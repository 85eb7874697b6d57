"""Who the client is: REMOTE_ADDR, X-Forwarded-For only through trusted proxies, or ?ip=."""
import pytest

from shoal_server.clientaddr import BadClientAddress, ClientResolver

R = ClientResolver(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize("remote,xff,expected", [
    ("142.104.1.1", "", "142.104.1.1"),
    ("142.104.1.1", "1.2.3.4", "142.104.1.1"),              # untrusted peer cannot spoof
    ("127.0.0.1", "133.11.1.1", "133.11.1.1"),              # trusted proxy forwards
    ("127.0.0.1", "133.11.1.1, 10.1.1.1", "133.11.1.1"),    # chain of trusted proxies
    ("127.0.0.1", "6.6.6.6, 133.11.1.1", "133.11.1.1"),     # left-most entries are client-controlled
    ("127.0.0.1", "garbage", "127.0.0.1"),
    ("127.0.0.1", "", "127.0.0.1"),
    ("::ffff:142.104.1.1", "", "142.104.1.1"),
    ("2001:db8::1", "", "2001:db8::1"),
])
def test_resolve(remote, xff, expected):
    assert R.resolve({"REMOTE_ADDR": remote, "HTTP_X_FORWARDED_FOR": xff}) == expected


def test_query_ip_overrides():
    assert R.resolve({"REMOTE_ADDR": "127.0.0.1"}, "137.158.1.1") == "137.158.1.1"


@pytest.mark.parametrize("bad", ["", "x", "1.2.3.4.5", "<script>", "1.2.3.4/8"])
def test_invalid_query_ip(bad):
    with pytest.raises(BadClientAddress):
        R.resolve({"REMOTE_ADDR": "127.0.0.1"}, bad)
