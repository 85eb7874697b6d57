# mod_wsgi script for shoal-server (WSGIScriptAlias in shoal.conf). The configuration file is
# taken from `SetEnv shoal.config PATH`; the service starts on the first request of the process.
from shoal_server.wsgi import application  # noqa: F401
