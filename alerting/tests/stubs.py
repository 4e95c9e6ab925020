"""Values shared by the alerting tests and their fixtures (secrets that must never leak)."""

from __future__ import annotations

import socket

SLACK_TOKEN = "xoxb-1111-2222-abcdefghijklmnop"
SMTP_PASSWORD = "pw-Zq8!hunter2-very-secret"
WEBHOOK_PATH = "/services/T0001/B0002/webhooksecretXYZ123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
