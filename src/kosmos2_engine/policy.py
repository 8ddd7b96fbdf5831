"""The generation policy: every per-request setting, parsed and validated in one place.

A request's settings (a mapping from the SDK, the CLI or a test) become one frozen
:class:`GenerationPolicy`. Nothing else reads raw settings. Invalid values raise
:class:`SettingsError`, which names the field and what is allowed; the serving adapter
turns it into an HTTP 400.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

DEFAULT_PROMPT = "<grounding> An image of"
GROUNDING_TAG = "<grounding>"
MAX_NEW_TOKENS_LIMIT = 512
MAX_PROMPT_CHARS = 2000


class SettingsError(ValueError):
    """A setting has a wrong type or value. ``field`` names the offending setting."""

    def __init__(self, field: str, message: str):
        super().__init__(f"Invalid setting '{field}': {message}")
        self.field = field


@dataclass(frozen=True)
class GenerationPolicy:
    """How one request is decoded and filtered. Greedy decoding, one beam, always.

    Attributes:
        prompt: the text after the image tokens; always starts with ``<grounding>`` so the
            model links phrases to boxes.
        max_new_tokens: decode at most this many tokens per prompt, 1..512.
        confidence_threshold: boxes whose confidence is below this are dropped, 0..1.
    """

    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 64
    confidence_threshold: float = 0.0

    def __post_init__(self) -> None:
        _check_prompt(self.prompt)
        _check_int_range("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        _check_unit_interval("confidence_threshold", self.confidence_threshold)


def policy_from_settings(
    settings: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> GenerationPolicy:
    """Merge request ``settings`` over ``defaults`` and validate them into a policy.

    Keys this model does not use (the SDK adds several, such as ``classes`` or
    ``sliding_window_mode``) are ignored here. ``conf``, which ``ModelAPI.predict(conf=...)``
    sends, is an alias of ``confidence_threshold`` and wins over it. A value of ``None``
    means "use the default".
    """
    merged = {k: v for k, v in (defaults or {}).items() if v is not None}
    merged.update({k: v for k, v in (settings or {}).items() if v is not None})
    if "conf" in merged:
        merged["confidence_threshold"] = merged["conf"]
    base = GenerationPolicy()
    return GenerationPolicy(
        prompt=with_grounding_tag(_as_str("prompt", merged.get("prompt", base.prompt))),
        max_new_tokens=_as_int("max_new_tokens", merged.get("max_new_tokens", base.max_new_tokens)),
        confidence_threshold=_as_float(
            "confidence_threshold", merged.get("confidence_threshold", base.confidence_threshold)
        ),
    )


def with_grounding_tag(prompt: str) -> str:
    """Prefix ``<grounding>`` unless the prompt already starts with it."""
    stripped = prompt.lstrip()
    return stripped if stripped.startswith(GROUNDING_TAG) else f"{GROUNDING_TAG} {stripped}"


def _as_str(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SettingsError(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise SettingsError(field, "must not be empty")
    return value


def _as_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(field, f"expected an integer, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise SettingsError(field, f"expected an integer, got {value!r}")
    return int(value)


def _as_float(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(field, f"expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def _check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise SettingsError("prompt", "must not be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SettingsError("prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")


def _check_int_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SettingsError(field, f"must be an integer from {low} to {high}, got {value}")


def _check_unit_interval(field: str, value: float) -> None:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise SettingsError(field, f"must be a number from 0 to 1, got {value}")
