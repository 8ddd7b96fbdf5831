"""Keep API tokens out of the logs.

The SDK logs each request's ``state`` at debug level (``Received a request to
'inference_image'``), and a client that puts its ``api_token`` into the multipart ``settings`` /
``state`` field, as some hand-written clients do, would have it written to the log. This filter
replaces the value of every token-like key (in dicts and in JSON or ``key=value`` text) and the
server's own ``API_TOKEN`` wherever it appears, in the message, its arguments and the
``extra`` fields, before any handler formats the record.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

REDACTED = "***"
TOKEN_KEYS = ("api_token", "apitoken", "x-api-key", "access_token", "token", "authorization")
_TOKEN_IN_TEXT = re.compile(
    r"""(?P<key>(?<![\w-])["']?(?:api_token|apiToken|x-api-key|access_token|API_TOKEN|token)["']?\s*[:=]\s*["']?)"""
    r"""(?P<value>[^"'\s,}&]+)""", re.IGNORECASE)
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(value: Any, secret: str | None = None) -> Any:
    """``value`` with token values replaced by ``***``: dict keys in :data:`TOKEN_KEYS`
    (any case), ``key: value`` / ``key=value`` text, and ``secret`` anywhere in text."""
    if isinstance(value, str):
        text = _TOKEN_IN_TEXT.sub(lambda m: m.group("key") + REDACTED, value)
        return text.replace(secret, REDACTED) if secret else text
    if isinstance(value, dict):
        return {key: REDACTED if str(key).lower() in TOKEN_KEYS else redact(item, secret)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item, secret) for item in value)
    return value


class TokenRedactingFilter(logging.Filter):
    """A logging filter that redacts tokens in place and keeps every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        secret = os.environ.get("API_TOKEN") or None
        record.msg = redact(record.msg, secret)
        if isinstance(record.args, (tuple, dict)):
            record.args = redact(record.args, secret)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_FIELDS:
                setattr(record, name, redact(value, secret))
        return True


def redact_tokens_in(logger: logging.Logger) -> None:
    """Attach one :class:`TokenRedactingFilter` to ``logger`` and to its handlers (records of
    child loggers reach only the handlers); calling it again adds nothing."""
    for target in (logger, *logger.handlers):
        if not any(isinstance(f, TokenRedactingFilter) for f in target.filters):
            target.addFilter(TokenRedactingFilter())
