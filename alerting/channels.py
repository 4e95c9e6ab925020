"""Where alerts go: email (Django's SMTP backend), Slack (bot token or incoming webhook) and the
log. Each channel reads its settings at call time and raises ChannelError on failure; the text of
a ChannelError has its secrets scrubbed and is safe to store and log."""

from __future__ import annotations

import json
import logging
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend
from django.template.loader import render_to_string
from django.utils.html import escape as html_escape

from common.logging import RedactSecretsFilter, redact

if TYPE_CHECKING:
    from .models import Alert

alert_logger = logging.getLogger("alerting")

_SEVERITY_LEVELS = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "critical": logging.CRITICAL,
}
_SLACK_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}
# Stored errors are for people; a provider's whole HTML error page is not.
_MAX_ERROR_CHARS = 1000


class ChannelError(Exception):
    """A channel could not send. `retry_after` (seconds) is set when the far end asked us to
    wait (Slack's `ratelimited`): the next attempt is scheduled no earlier than that."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        self.message = scrub_secrets(message)
        self.retry_after = retry_after
        super().__init__(self.message)


def _secret_values() -> list[str]:
    values = [
        getattr(settings, "SMTP_PASS", ""),
        getattr(settings, "SLACK_BOT_TOKEN", ""),
        getattr(settings, "SLACK_WEBHOOK_URL", ""),
    ]
    webhook = getattr(settings, "SLACK_WEBHOOK_URL", "")
    if webhook:
        # The secret part of an incoming-webhook URL is its path.
        values.append(urlsplit(webhook).path)
    # Longest first, so that a URL is replaced whole before its path is.
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)


def scrub_secrets(text: str) -> str:
    """Remove our configured secrets (SMTP password, Slack token, webhook URL) and anything that
    looks like a credential from `text`."""
    for secret in _secret_values():
        text = text.replace(secret, "[redacted]")
    text = redact(text)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text


class _ScrubSecretsFilter(RedactSecretsFilter):
    """The log redaction, plus our configured secrets by value."""

    def scrub(self, text: str) -> str:
        return scrub_secrets(text)


# slack_sdk logs request URLs (a webhook URL is a secret) at debug level: give it a logger of
# ours that scrubs every record before any handler sees it.
_sdk_logger = logging.getLogger("alerting.slack_sdk")
_sdk_logger.addFilter(_ScrubSecretsFilter())


def dashboard_url() -> str:
    return f"{settings.SITE_URL.rstrip('/')}/admin/dashboard/"


def alert_admin_url(alert: Alert) -> str:
    return f"{settings.SITE_URL.rstrip('/')}/admin/alerting/alert/{alert.pk}/change/"


def _display(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def context_items(alert: Alert) -> list[tuple[str, str]]:
    """The alert's numbers as (label, value) pairs, in the caller's order."""
    context = alert.context if isinstance(alert.context, dict) else {}
    return [(str(key), _display(value)) for key, value in context.items()]


# --- escaping: the one place user-derived text is made safe for a channel's markup ---------------


def slack_escape(text: str) -> str:
    """Slack mrkdwn's control characters as entities, so that text such as `<!channel>` or
    `<https://evil.example|Click>` (e.g. inside a self-registered email address) stays text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(text: str) -> str:
    """No markup (plain-text email, the log)."""
    return text


@dataclass(frozen=True)
class AlertText:
    """Every user-derived value of an alert, escaped for one output format. Channels render
    from this, never from the alert's fields directly."""

    title: str
    message: str
    items: list[tuple[str, str]]
    kind: str
    dedup_key: str


def alert_text(alert: Alert, escape: Callable[[str], str]) -> AlertText:
    return AlertText(
        title=escape(alert.title),
        message=escape(alert.message),
        items=[(escape(label), escape(value)) for label, value in context_items(alert)],
        kind=escape(alert.kind),
        dedup_key=escape(alert.dedup_key),
    )


class Channel:
    name = ""
    # Whether a success means someone was told (email, Slack); the log is only a record.
    delivers = True

    def configured(self) -> bool:
        raise NotImplementedError

    def handles(self, alert: Alert) -> bool:
        """Whether this alert goes out on this channel (configured, and routed here)."""
        return self.configured()

    def missing(self) -> str:
        """What to set to configure the channel (empty when configured)."""
        return ""

    def send(self, alert: Alert) -> None:
        raise NotImplementedError


# --- email --------------------------------------------------------------------------------------


def admin_recipients() -> list[str]:
    raw = settings.ADMIN_EMAIL or ""
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    return [item.strip() for item in items if item and item.strip()]


def smtp_security(port: int) -> str:
    """'starttls', 'ssl' or 'none': SMTP_SECURITY when set, else by port (587 STARTTLS,
    465 SSL, anything else plain)."""
    chosen = (settings.SMTP_SECURITY or "auto").strip().lower()
    if chosen != "auto":
        return chosen
    return {587: "starttls", 465: "ssl"}.get(port, "none")


def smtp_backend() -> EmailBackend:
    """Django's SMTP backend built from the SMTP_* settings explicitly: every argument is given
    so that nothing falls back to EMAIL_* (which the test runner replaces with locmem)."""
    port = int(settings.SMTP_PORT)
    security = smtp_security(port)
    return EmailBackend(
        host=settings.SMTP_HOST,
        port=port,
        username=settings.SMTP_USER or "",
        password=settings.SMTP_PASS or "",
        use_tls=security == "starttls",
        use_ssl=security == "ssl",
        timeout=settings.SMTP_TIMEOUT,
        fail_silently=False,
    )


def email_subject(alert: Alert) -> str:
    title = " ".join(alert.title.split())  # no newlines: they would be header injection
    return f"[Memory Connector] {alert.severity.upper()}: {title}"


def build_email(alert: Alert) -> EmailMultiAlternatives:
    template_context = {
        "alert": alert,
        "severity": alert.severity.upper(),
        "dashboard_url": dashboard_url(),
        "alert_url": alert_admin_url(alert),
    }
    text = render_to_string(
        "alerting/alert_email.txt", {**template_context, "text": alert_text(alert, plain)}
    )
    # html_escape marks its result safe, so the template's autoescape does not escape twice.
    html = render_to_string(
        "alerting/alert_email.html", {**template_context, "text": alert_text(alert, html_escape)}
    )
    message = EmailMultiAlternatives(
        subject=email_subject(alert),
        body=text,
        from_email=settings.SMTP_FROM,
        to=admin_recipients(),
        headers={"X-Alert-Key": " ".join(alert.dedup_key.split())[:200]},
    )
    message.attach_alternative(html, "text/html")
    return message


def _smtp_error(exc: Exception) -> str:
    """ "SMTPDataError: 550 refused" rather than the tuple-with-bytes repr smtplib gives."""
    name = type(exc).__name__
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(
            f"{rcpt}: {code} {_decode(reply)}" for rcpt, (code, reply) in exc.recipients.items()
        )
        return f"{name}: {refused}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{name}: {exc.smtp_code} {_decode(exc.smtp_error)}"
    return f"{name}: {exc}"


def _decode(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class EmailChannel(Channel):
    name = "email"

    def configured(self) -> bool:
        return bool(settings.SMTP_HOST) and bool(admin_recipients())

    def missing(self) -> str:
        needed = [n for n in ("SMTP_HOST", "ADMIN_EMAIL") if not getattr(settings, n, "")]
        return " and ".join(needed)

    def send(self, alert: Alert) -> None:
        message = build_email(alert)
        try:
            sent = smtp_backend().send_messages([message])
        except Exception as exc:  # noqa: BLE001 - any failure is this channel failing
            raise ChannelError(_smtp_error(exc)) from None
        if sent != 1:
            raise ChannelError("the SMTP server accepted no message")


# --- Slack --------------------------------------------------------------------------------------


def slack_channel_for(alert: Alert) -> str:
    """Budget alerts go to SLACK_CHANNEL_AI_COSTS when it is set, the rest to
    SLACK_CHANNEL_ALERTS."""
    if alert.kind.startswith("budget") and settings.SLACK_CHANNEL_AI_COSTS:
        return settings.SLACK_CHANNEL_AI_COSTS
    return settings.SLACK_CHANNEL_ALERTS


def slack_text(alert: Alert) -> str:
    text = alert_text(alert, slack_escape)
    lines = [
        f"{_SLACK_EMOJI.get(alert.severity, '')} *[{alert.severity.upper()}] {text.title}*",
    ]
    if text.message:
        lines.append(text.message)
    lines += [f"• {label}: {value}" for label, value in text.items]
    lines.append(f"<{dashboard_url()}|Open the dashboard> · key `{text.dedup_key}`")
    return "\n".join(lines)


def _retry_after(headers) -> float | None:
    for key, value in dict(headers or {}).items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, (list, tuple)) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


class SlackChannel(Channel):
    name = "slack"

    def configured(self) -> bool:
        bot = bool(settings.SLACK_BOT_TOKEN) and bool(
            settings.SLACK_CHANNEL_ALERTS or settings.SLACK_CHANNEL_AI_COSTS
        )
        return bot or bool(settings.SLACK_WEBHOOK_URL)

    def handles(self, alert: Alert) -> bool:
        bot = bool(settings.SLACK_BOT_TOKEN) and bool(slack_channel_for(alert))
        return bot or bool(settings.SLACK_WEBHOOK_URL)

    def missing(self) -> str:
        if self.configured():
            return ""
        return "SLACK_BOT_TOKEN and SLACK_CHANNEL_ALERTS, or SLACK_WEBHOOK_URL"

    def send(self, alert: Alert) -> None:
        channel = slack_channel_for(alert)
        if settings.SLACK_BOT_TOKEN and channel:
            self._post_message(channel, slack_text(alert))
        elif settings.SLACK_WEBHOOK_URL:
            self._post_webhook(slack_text(alert))
        else:
            raise ChannelError("slack: no channel for this alert kind")

    def _post_message(self, channel: str, text: str) -> None:
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        client = WebClient(
            token=settings.SLACK_BOT_TOKEN,
            base_url=settings.SLACK_API_URL,
            timeout=settings.SLACK_TIMEOUT,
            logger=_sdk_logger,
            # One HTTP request per attempt: our own backoff (and Retry-After) does the retrying.
            retry_handlers=[],
        )
        try:
            client.chat_postMessage(channel=channel, text=text, unfurl_links=False)
        except SlackApiError as exc:
            response = exc.response
            data = response.data if isinstance(response.data, dict) else {}
            error = str(data.get("error") or "unexpected response")
            status = response.status_code
            if status == 429 or error == "ratelimited":
                wait = _retry_after(response.headers)
                raise ChannelError(
                    f"slack: ratelimited (HTTP {status}, Retry-After {wait}s)",
                    retry_after=wait if wait is not None else 60.0,
                ) from None
            raise ChannelError(f"slack: {error} (HTTP {status})") from None
        except Exception as exc:  # noqa: BLE001 - network errors, timeouts
            raise ChannelError(f"slack: {type(exc).__name__}: {exc}") from None

    def _post_webhook(self, text: str) -> None:
        from slack_sdk.webhook import WebhookClient

        client = WebhookClient(
            settings.SLACK_WEBHOOK_URL,
            timeout=settings.SLACK_TIMEOUT,
            logger=_sdk_logger,
            retry_handlers=[],
        )
        try:
            response = client.send(text=text, unfurl_links=False)
        except Exception as exc:  # noqa: BLE001
            raise ChannelError(f"slack webhook: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429:
            wait = _retry_after(response.headers)
            raise ChannelError(
                f"slack webhook: ratelimited (HTTP 429, Retry-After {wait}s)",
                retry_after=wait if wait is not None else 60.0,
            )
        if response.status_code != 200:
            body = (response.body or "")[:200]
            raise ChannelError(f"slack webhook: HTTP {response.status_code}: {body}")


# --- log ----------------------------------------------------------------------------------------


class LogChannel(Channel):
    """Always on: one structured record on the `alerting` logger, at the alert's severity."""

    name = "log"
    delivers = False

    def configured(self) -> bool:
        return True

    def send(self, alert: Alert) -> None:
        alert_logger.log(
            _SEVERITY_LEVELS.get(alert.severity, logging.WARNING),
            "alert [%s] %s: %s",
            alert.severity,
            alert.title,
            alert.message,
            extra={
                "alert_id": alert.pk,
                "kind": alert.kind,
                "severity": alert.severity,
                "dedup_key": alert.dedup_key,
                "context": alert.context,
            },
        )


CHANNELS: tuple[Channel, ...] = (EmailChannel(), SlackChannel(), LogChannel())
CHANNEL_NAMES = tuple(channel.name for channel in CHANNELS)


def get_channel(name: str) -> Channel:
    for channel in CHANNELS:
        if channel.name == name:
            return channel
    raise KeyError(name)
