"""The generation policy: what one request asks of the model, validated in one place.

A :class:`GenerationPolicy` is frozen and checks itself on construction; invalid values raise
:class:`SettingsError`, which names the field and what is allowed (the serving adapter turns
it into an HTTP 400). :mod:`.settings` builds a policy from raw request settings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

TASKS = (
    "caption",
    "detailed_caption",
    "phrase_grounding",
    "referring_expression",
    "region_description",
    "vqa",
    "custom",
)
TEXT_TASKS = ("caption", "detailed_caption", "vqa", "custom")  # write image-level text
BOX_TASKS = ("phrase_grounding", "referring_expression")  # decode one box run per prompt
MAX_NEW_TOKENS_LIMIT = 512
MAX_PROMPT_CHARS = 2000
MAX_TEXT_CHARS = 300  # one phrase, expression or question
MAX_ITEMS = 32  # phrases or regions in one request
MAX_TOP_K = 10

PixelBox = tuple[float, float, float, float]
_MARKUP = re.compile(
    r"</?(?:s|pad|unk|mask|doc|image|chunk|line|phrase|object|grounding)>"
    r"|</delimiter_of_multi_objects/>|<patch_index_\d+>"
)


class SettingsError(ValueError):
    """A setting has a wrong type or value. ``field`` names the offending setting."""

    def __init__(self, field: str, message: str):
        super().__init__(f"Invalid setting '{field}': {message}")
        self.field = field


@dataclass(frozen=True)
class GenerationPolicy:
    """One request: the task, its inputs, and how to decode. Greedy decoding, always.

    Attributes:
        task: one of :data:`TASKS`.
        phrases: ``phrase_grounding``: 1..32 phrases or class names, each grounded on its own.
        expression: ``referring_expression``: the expression to box.
        question: ``vqa``: the question to answer.
        regions: ``region_description``: pixel ``[left, top, right, bottom]`` boxes, inclusive;
            empty means "the image's existing labels" (the caller supplies them).
        prompt: ``custom``: raw text after the image; ``<grounding>`` is added when missing.
        top_k: ``referring_expression``: how many candidate boxes to return, 1..10.
        max_new_tokens: decode at most this many tokens per prompt, 1..512.
        confidence_threshold: boxes whose confidence is below this are dropped, 0..1.
    """

    task: str = "caption"
    phrases: tuple[str, ...] = ()
    expression: str | None = None
    question: str | None = None
    regions: tuple[PixelBox, ...] = ()
    prompt: str | None = None
    top_k: int = 1
    max_new_tokens: int = 64
    confidence_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SettingsError("task", f"must be one of {', '.join(TASKS)}; got {self.task!r}")
        _check_int_range("top_k", self.top_k, 1, MAX_TOP_K)
        _check_int_range("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        _check_unit_interval("confidence_threshold", self.confidence_threshold)
        _TASK_CHECKS[self.task](self)


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


def _require(policy: GenerationPolicy, field: str) -> None:
    if getattr(policy, field) in (None, ()):
        raise SettingsError(field, f"is required by task '{policy.task}'")


def _check_phrase_grounding(policy: GenerationPolicy) -> None:
    _require(policy, "phrases")
    if len(policy.phrases) > MAX_ITEMS:
        raise SettingsError("phrases", f"at most {MAX_ITEMS} phrases, got {len(policy.phrases)}")
    for i, phrase in enumerate(policy.phrases):
        check_user_text(f"phrases[{i}]", phrase)


def _check_referring_expression(policy: GenerationPolicy) -> None:
    _require(policy, "expression")
    check_user_text("expression", policy.expression)


def _check_vqa(policy: GenerationPolicy) -> None:
    _require(policy, "question")
    check_user_text("question", policy.question)


def _check_custom(policy: GenerationPolicy) -> None:
    _require(policy, "prompt")
    if not policy.prompt.strip():
        raise SettingsError("prompt", "must not be empty")
    if len(policy.prompt) > MAX_PROMPT_CHARS:
        raise SettingsError("prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(policy.prompt)}")


def _check_region_description(policy: GenerationPolicy) -> None:
    if len(policy.regions) > MAX_ITEMS:
        raise SettingsError("regions", f"at most {MAX_ITEMS} regions, got {len(policy.regions)}")
    for i, (left, top, right, bottom) in enumerate(policy.regions):
        if not all(math.isfinite(v) and v >= 0 for v in (left, top, right, bottom)):
            raise SettingsError(f"regions[{i}]", "coordinates must be finite and >= 0")
        if left > right or top > bottom:
            raise SettingsError(
                f"regions[{i}]",
                "must be [left, top, right, bottom] with "
                f"left <= right and top <= bottom, got {[left, top, right, bottom]}",
            )


_TASK_CHECKS = {
    "caption": lambda policy: None,
    "detailed_caption": lambda policy: None,
    "phrase_grounding": _check_phrase_grounding,
    "referring_expression": _check_referring_expression,
    "region_description": _check_region_description,
    "vqa": _check_vqa,
    "custom": _check_custom,
}


def _check_int_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SettingsError(field, f"must be an integer from {low} to {high}, got {value}")


def _check_unit_interval(field: str, value: float) -> None:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise SettingsError(field, f"must be a number from 0 to 1, got {value}")
