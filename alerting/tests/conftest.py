"""Real parts for the alerting tests: an SMTP server (aiosmtpd) and a Slack API stub (http.server),
both on 127.0.0.1 in threads; channel settings pointed at them per test."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from alerting.tasks import deliver_alert
from alerting.tests.stubs import SLACK_TOKEN, SMTP_PASSWORD, free_port


@pytest.fixture(autouse=True)
def _no_channels_configured(settings):
    """Start every test from "nothing configured" whatever the developer's .env says, and keep
    any accidental Slack call away from slack.com."""
    settings.ADMIN_EMAIL = ""
    settings.SMTP_HOST = ""
    settings.SMTP_PORT = 587
    settings.SMTP_USER = ""
    settings.SMTP_PASS = ""
    settings.SMTP_FROM = "Memory Connector <alerts@mc.example.com>"
    settings.SMTP_SECURITY = "auto"
    settings.SMTP_TIMEOUT = 5
    settings.SLACK_BOT_TOKEN = ""
    settings.SLACK_CHANNEL_ALERTS = ""
    settings.SLACK_CHANNEL_AI_COSTS = ""
    settings.SLACK_WEBHOOK_URL = ""
    settings.SLACK_API_URL = f"http://127.0.0.1:{free_port()}/api/"
    settings.SLACK_TIMEOUT = 5
    settings.SITE_URL = "https://mc.example.com"
    settings.ALERT_MAX_ATTEMPTS = 8
    settings.ALERT_RETRY_BASE_SECONDS = 60
    settings.ALERT_RETRY_MAX_SECONDS = 3600


@pytest.fixture
def eager_celery():
    """Run .delay() in-process (CELERY_TASK_ALWAYS_EAGER), restored afterwards."""
    conf = deliver_alert.app.conf
    before = conf.task_always_eager
    conf.task_always_eager = True
    yield
    conf.task_always_eager = before


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass
class SmtpHandler:
    messages: list = field(default_factory=list)
    # A reply such as "550 5.7.1 Refused" makes the server refuse the message.
    refuse_with: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if self.refuse_with:
            return self.refuse_with
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    handler: SmtpHandler
    port: int

    @property
    def messages(self) -> list:
        return self.handler.messages


def _start_smtp(settings, **controller_kwargs):
    handler = SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **controller_kwargs)
    controller.start()
    settings.SMTP_HOST = "127.0.0.1"
    settings.SMTP_PORT = port
    settings.ADMIN_EMAIL = "ops@example.com, cto@example.com"
    return controller, SmtpServer(handler=handler, port=port)


@pytest.fixture
def smtp(settings):
    """A real SMTP server on 127.0.0.1, with SMTP_* and ADMIN_EMAIL pointing at it."""
    controller, server = _start_smtp(settings)
    yield server
    controller.stop()


@pytest.fixture
def smtp_rejecting_login(settings, caplog):
    """An SMTP server that refuses every login; SMTP_USER/SMTP_PASS set."""

    def refuse(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False)

    # The stub's own debug log carries the AUTH exchange; it is not ours to test.
    caplog.set_level("WARNING", logger="mail.log")
    controller, server = _start_smtp(settings, authenticator=refuse, auth_require_tls=False)
    settings.SMTP_USER = "alerts@example.com"
    settings.SMTP_PASS = SMTP_PASSWORD
    yield server
    controller.stop()


@pytest.fixture
def smtp_down(settings):
    """SMTP settings pointing at a port where nothing listens."""
    settings.SMTP_HOST = "127.0.0.1"
    settings.SMTP_PORT = free_port()
    settings.ADMIN_EMAIL = "ops@example.com"
    return settings.SMTP_PORT


# --- Slack ---------------------------------------------------------------------------------------


@dataclass
class SlackStub:
    base_url: str
    requests: list = field(default_factory=list)
    # Answers to give, in order; when empty every request gets {"ok": true}.
    replies: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, status: int, body, headers: dict | None = None) -> None:
        self.replies.append((status, body, headers or {}))

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/api/")


def _slack_handler(stub: SlackStub):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's hook name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            with stub.lock:
                stub.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                status, reply, headers = (
                    stub.replies.pop(0) if stub.replies else (200, {"ok": True}, {})
                )
            payload = reply if isinstance(reply, str) else json.dumps(reply)
            content_type = "text/plain" if isinstance(reply, str) else "application/json"
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
            pass

    return Handler


@pytest.fixture
def slack(settings):
    """A local Slack Web API stub; SLACK_API_URL points at it, bot token and channel set."""
    stub = SlackStub(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _slack_handler(stub))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    stub.base_url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    settings.SLACK_API_URL = stub.base_url
    settings.SLACK_BOT_TOKEN = SLACK_TOKEN
    settings.SLACK_CHANNEL_ALERTS = "#alerts"
    yield stub
    server.shutdown()
    server.server_close()
    thread.join()
