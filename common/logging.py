"""Logging helpers: keep credentials out of every log line."""

from __future__ import annotations

import logging
import re

_SECRET_PATTERNS = [
    # Authorization headers and bearer tokens, JWTs, API keys, Slack tokens, passwords in URLs.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), "[redacted-jwt]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "[redacted-key]"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"), "[redacted-slack-token]"),
    (re.compile(r"(?i)(\w+://[^:/\s]+:)[^@\s]+(@)"), r"\1[redacted]\2"),
    (
        re.compile(r"(?i)(\"?(?:password|pass|secret|token|api_key)\"?\s*[:=]\s*\"?)[^\s\",}]+"),
        r"\1[redacted]",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrite the rendered message so that tokens and passwords never leave the process.
    Subclasses may scrub more by overriding `scrub`."""

    def scrub(self, text: str) -> str:
        return redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not kill logging
            return True
        cleaned = self.scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Exception text is rendered later by the formatter; redact it through exc_text.
            formatter = logging.Formatter()
            record.exc_text = self.scrub(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


class CacheOutageFilter(logging.Filter):
    """For django-redis's logger of ignored errors (DJANGO_REDIS_LOGGER): it reports each one
    as "Exception ignored" at ERROR with a traceback. The request is answered regardless (the
    throttle fails open), so make it one WARNING line that names the failure, e.g.
    `cache unavailable, throttles fail open: ConnectionError: Error 111 connecting to
    127.0.0.1:6379. Connection refused.` (redis-py names host and port, never the password; the
    handler's redaction still runs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        # django-redis wraps the client's error in ConnectionInterrupted (`from` the original).
        cause = getattr(error, "__cause__", None) or error
        if cause is not None:
            record.msg = "cache unavailable, throttles fail open: %s: %s"
            record.args = (type(cause).__name__, cause)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True
