"""Keep secrets and whole request bodies out of the logs.

The SDK logs each request's ``state`` at debug level (``Received a request to
'inference_image'``, ``extra={"state": state}``): a client's ``api_token`` (in the multipart
``settings`` field, as some hand-written clients send it), a password in an ``image_url``
(``https://user:pass@host/``), and a 50 MB ``image_base64`` were all written out whole.
:class:`LogHygieneFilter` rewrites every record before any handler formats it:

* the value of every token-like key (in dicts at any depth, in a record's own fields, which is
  where the SDK puts a body's top-level keys with ``extra=state``, and in JSON, ``key=value``
  and URL query text, such as the access log's ``?key=...``), and the server's own
  ``API_TOKEN`` wherever it appears, become ``***``;
* ``user:password@`` in URLs becomes ``***@``;
* a string longer than :data:`MAX_TEXT` characters keeps its start and says how long it was;
  lists keep :data:`MAX_ITEMS` items, and nesting stops at :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .config import api_token

REDACTED = "***"
MAX_TEXT = 2000
MAX_ITEMS = 50
MAX_DEPTH = 6
TOKEN_KEYS = frozenset(
    {"api_token", "apitoken", "x-api-key", "api_key", "apikey", "access_token", "token", "authorization",
     "password", "secret", "key", "cookie"}
)  # fmt: skip
_TOKEN_IN_TEXT = re.compile(
    r"""(?P<key>(?<![\w-])["']?(?:api_token|apitoken|x-api-key|api_key|apikey|access_token|token|authorization|"""
    r"""password|secret|key|cookie)["']?\s*[:=]\s*["']?(?:(?:bearer|basic)\s+)?)"""
    r"""(?P<value>[^"'\s,}&]+)""",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@\"']+@", re.IGNORECASE)
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def tidy(value: Any, secret: str | None = None, depth: int = 0) -> Any:
    """``value`` with tokens, URL credentials and ``secret`` replaced by ``***``, long text
    cut to :data:`MAX_TEXT` characters and long or deep containers shortened."""
    if isinstance(value, str):
        text = _TOKEN_IN_TEXT.sub(lambda m: m.group("key") + REDACTED, value)
        text = _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
        text = text.replace(secret, REDACTED) if secret else text
        return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT]}… ({len(text)} characters)"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if depth >= MAX_DEPTH and isinstance(value, (dict, list, tuple)):
        return f"<{type(value).__name__} of {len(value)}>"
    if isinstance(value, dict):
        items = list(value.items())
        tidied = {
            key: REDACTED if str(key).lower() in TOKEN_KEYS else tidy(item, secret, depth + 1)
            for key, item in items[:MAX_ITEMS]
        }
        if len(items) > MAX_ITEMS:
            tidied["…"] = f"{len(items) - MAX_ITEMS} more keys"
        return tidied
    if isinstance(value, (list, tuple)):
        kept = [tidy(item, secret, depth + 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            kept.append(f"… {len(value) - MAX_ITEMS} more items")
        return type(value)(kept) if isinstance(value, tuple) else kept
    return value


class LogHygieneFilter(logging.Filter):
    """A logging filter that tidies records in place (see :func:`tidy`) and keeps every one."""

    def filter(self, record: logging.LogRecord) -> bool:
        secret = api_token()
        record.msg = tidy(record.msg, secret)
        if isinstance(record.args, (tuple, dict)):
            record.args = tidy(record.args, secret)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_FIELDS:
                setattr(record, name, REDACTED if name.lower() in TOKEN_KEYS else tidy(value, secret))
        return True


def keep_logs_tidy(logger: logging.Logger) -> None:
    """Attach one :class:`LogHygieneFilter` to ``logger`` and to its handlers (records of child
    loggers reach only the handlers); calling it again adds nothing."""
    for target in (logger, *logger.handlers):
        if not any(isinstance(f, LogHygieneFilter) for f in target.filters):
            target.addFilter(LogHygieneFilter())
