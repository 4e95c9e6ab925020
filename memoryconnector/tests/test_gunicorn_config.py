"""gunicorn's access log, as gunicorn itself renders it with our gunicorn.conf.py, never holds a
query string."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from django.conf import settings
from gunicorn.config import Config
from gunicorn.glogging import Logger


def test_the_access_log_has_paths_without_query_strings():
    config = Config()
    namespace: dict = {}
    exec((settings.BASE_DIR / "gunicorn.conf.py").read_text(), namespace)  # noqa: S102 - ours
    config.set("access_log_format", namespace["access_log_format"])
    logger = Logger(config)
    request = SimpleNamespace(
        method="GET",
        path="/api/v1/memories",
        query="cursor=secret-position&token=abc",
        uri="/api/v1/memories?cursor=secret-position&token=abc",
        version=(1, 1),
        headers=[("REFERER", "https://x.example/?token=abc"), ("USER-AGENT", "curl/8")],
    )
    response = SimpleNamespace(status="200 OK", sent=12, headers=[], response_length=12)
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "GET",
        "RAW_URI": request.uri,
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query,
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    atoms = logger.atoms(response, request, environ, dt.timedelta(milliseconds=3))
    line = config.access_log_format % atoms
    assert '"GET /api/v1/memories HTTP/1.1" 200' in line
    assert "token" not in line and "secret-position" not in line
