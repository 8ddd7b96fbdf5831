"""Raw request settings (a mapping from the SDK, the CLI or a test) to a :class:`GenerationPolicy`.

Nothing else reads raw settings. Types are checked here; values are checked by the policy.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .policy import GenerationPolicy, PixelBox, SettingsError

# Settings that only one task reads. Sending one with another task is a mistake worth a 400:
# it would otherwise be silently ignored.
TASK_OF_FIELD = {
    "phrases": "phrase_grounding",
    "expression": "referring_expression",
    "question": "vqa",
    "regions": "region_description",
    "prompt": "custom",
}
_PHRASE_SEPARATORS = re.compile(r"[.,]")


def policy_from_settings(settings: Mapping[str, Any] | None,
                         defaults: Mapping[str, Any] | None = None) -> GenerationPolicy:
    """Merge request ``settings`` over ``defaults`` and validate them into a policy.

    Keys this model does not use (the SDK adds several, such as ``classes`` or
    ``sliding_window_mode``) are ignored. ``conf``, which ``ModelAPI.predict(conf=...)`` sends,
    is an alias of ``confidence_threshold`` and wins over it. ``None`` means "not given".
    """
    merged = {k: v for k, v in (defaults or {}).items() if v is not None}
    merged.update({k: v for k, v in (settings or {}).items() if v is not None})
    if "conf" in merged:
        merged["confidence_threshold"] = merged["conf"]
    task = _as_task(merged.get("task", "caption"))
    _refuse_fields_of_other_tasks(task, merged)
    base = GenerationPolicy()
    return GenerationPolicy(
        task=task,
        phrases=_as_phrases(merged["phrases"]) if "phrases" in merged else (),
        expression=_as_str("expression", merged.get("expression")),
        question=_as_str("question", merged.get("question")),
        regions=_as_regions(merged["regions"]) if "regions" in merged else (),
        prompt=_as_str("prompt", merged.get("prompt")),
        top_k=_as_int("top_k", merged.get("top_k", base.top_k)),
        max_new_tokens=_as_int("max_new_tokens", merged.get("max_new_tokens", base.max_new_tokens)),
        confidence_threshold=_as_float(
            "confidence_threshold", merged.get("confidence_threshold", base.confidence_threshold)),
    )


def _as_task(value: Any) -> str:
    if not isinstance(value, str):
        raise SettingsError("task", f"expected a string, got {type(value).__name__}")
    return value.strip().lower()


def _refuse_fields_of_other_tasks(task: str, merged: Mapping[str, Any]) -> None:
    for field, owner in TASK_OF_FIELD.items():
        if field in merged and owner != task:
            raise SettingsError(field, f"is used only by task '{owner}', but task is '{task}'; "
                                       f"set task to '{owner}' or leave {field} out")


def _as_phrases(value: Any) -> tuple[str, ...]:
    """A list of strings, or one string split on "." and ","; stripped, empty parts dropped,
    duplicates dropped (first kept)."""
    if isinstance(value, str):
        parts = tuple(_PHRASE_SEPARATORS.split(value))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise SettingsError(f"phrases[{i}]", f"expected a string, got {type(item).__name__}")
        parts = tuple(value)
    else:
        raise SettingsError("phrases", "expected a list of strings or a string like 'cat. dog', "
                                       f"got {type(value).__name__}")
    phrases = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not phrases:
        raise SettingsError("phrases", "give at least one phrase, as a list or a string like 'cat. dog'")
    return phrases


def _as_regions(value: Any) -> tuple[PixelBox, ...]:
    if not isinstance(value, (list, tuple)):
        raise SettingsError("regions", "expected a list of [left, top, right, bottom] pixel boxes, "
                                       f"got {type(value).__name__}")
    regions = []
    for i, box in enumerate(value):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise SettingsError(f"regions[{i}]", f"expected [left, top, right, bottom], got {box!r}")
        regions.append(tuple(_as_float(f"regions[{i}]", v) for v in box))
    return tuple(regions)


def _as_str(field: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SettingsError(field, f"expected a string, got {type(value).__name__}")
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
