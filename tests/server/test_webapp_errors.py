"""A bug behind a route gives the client a bare 500 and the operator a traceback in the log."""
import logging

from shoal_server.config import load_config
from shoal_server.consumer import ConsumerStatus
from shoal_server.table import CacheTable
from shoal_server.webapp import create_app


class BrokenLocator:
    def locate(self, address):
        raise RuntimeError("database exploded")

    def close(self):
        pass


def test_internal_error_is_logged_not_shown(caplog):
    app = create_app(CacheTable(), BrokenLocator(), load_config(None), ConsumerStatus())
    with caplog.at_level(logging.ERROR, logger="shoal_server.webapp"):
        response = app.request("/nearest?ip=142.104.1.1")
    assert response.status.startswith("500")
    assert b"database exploded" not in response.data and b"Traceback" not in response.data
    assert any(r.exc_info and "database exploded" in str(r.exc_info[1]) for r in caplog.records)
    assert app.request("/all").status.startswith("200")  # the app keeps serving
