"""What every setting is checked against: limits, :class:`SettingsError`, and user text.

A :class:`SettingsError` names the field and what is allowed; the serving adapter turns it
into an HTTP 400.
"""

from __future__ import annotations

import math
import re

MAX_NEW_TOKENS_LIMIT = 512
MAX_PROMPT_CHARS = 2000
MAX_TEXT_CHARS = 300  # one phrase, expression or question
MAX_ITEMS = 32  # regions in one request
MAX_PHRASES = 100  # phrases in one request: COCO's 80 classes at once
MAX_TOP_K = 10

_MARKUP = re.compile(
    r"</?(?:s|pad|unk|mask|doc|image|chunk|line|phrase|object|grounding)>"
    r"|</delimiter_of_multi_objects/>|<patch_index_\d+>"
)


class SettingsError(ValueError):
    """A setting has a wrong type or value. ``field`` names the offending setting."""

    def __init__(self, field: str, message: str):
        super().__init__(f"Invalid setting '{field}': {message}")
        self.field = field


def find_markup(text: str) -> str | None:
    """The first Kosmos-2 tag or special token in ``text`` (``<phrase>``, ``</s>``,
    ``<patch_index_0001>`` …), or None. User text holding one could corrupt the grounding
    format, so it is refused."""
    match = _MARKUP.search(text)
    return match.group(0) if match else None


def check_user_text(field: str, text: str, limit: int = MAX_TEXT_CHARS) -> None:
    """Raise :class:`SettingsError` unless ``text`` is non-empty, at most ``limit`` characters
    and free of markup."""
    if not text.strip():
        raise SettingsError(field, "must not be empty")
    if len(text) > limit:
        raise SettingsError(field, f"at most {limit} characters, got {len(text)}")
    tag = find_markup(text)
    if tag is not None:
        raise SettingsError(
            field,
            f"contains the Kosmos-2 markup {tag!r}; user text must be plain words (the server adds every tag itself)",
        )


def check_int_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SettingsError(field, f"must be an integer from {low} to {high}, got {value}")


def check_unit_interval(field: str, value: float) -> None:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise SettingsError(field, f"must be a number from 0 to 1, got {value}")
