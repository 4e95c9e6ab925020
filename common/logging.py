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
