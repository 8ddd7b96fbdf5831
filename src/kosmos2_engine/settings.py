"""Raw request settings (a mapping from the SDK, the CLI or a test) to a :class:`GenerationPolicy`.

Nothing else reads raw settings. Types are checked here; values are checked by the policy.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from .tasks import TASK_OF_FIELD, GenerationPolicy, PixelBox
from .validation import SettingsError

# Settings that only one task reads (TASK_OF_FIELD, from the task table): sending one with
# another task is a mistake worth a 400, since it would otherwise be silently ignored.
_PHRASE_SEPARATORS = re.compile(r"[.,]")
# Every setting this model reads. Other keys are ignored (the SDK adds its own), unless one is
# so close to a key of ours that it is surely a misspelling of it.
OWN_FIELDS = ("task", *TASK_OF_FIELD, "top_k", "max_new_tokens", "confidence_threshold", "conf")
_TYPO_CUTOFF = 0.8


def policy_from_settings(
    settings: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> GenerationPolicy:
    """Merge request ``settings`` over ``defaults`` and validate them into a policy.

    Keys this model does not use (the SDK adds several, such as ``classes`` or
    ``sliding_window_mode``) are ignored, unless one is a near miss of a key of ours
    (``max_new_token``, ``Phrase``, ``topk``): that is a ``SettingsError`` naming both.
    ``conf``, which ``ModelAPI.predict(conf=...)`` sends,
    is an alias of ``confidence_threshold`` and wins over it. ``None`` means "not given".
    """
    _refuse_misspelt_fields(settings or {})
    merged = {k: v for k, v in (defaults or {}).items() if v is not None}
    merged.update({k: v for k, v in (settings or {}).items() if v is not None})
    if "conf" in merged:
        merged["confidence_threshold"] = merged["conf"]
    task = _as_task(merged.get("task", "caption"))
    _refuse_fields_of_other_tasks(task, merged)
    base = GenerationPolicy()
    return GenerationPolicy(
        task=task,
        **_as_named_phrases(merged.get("phrases")),
        expression=_as_str("expression", merged.get("expression")),
        question=_as_str("question", merged.get("question")),
        regions=_as_regions(merged["regions"]) if "regions" in merged else (),
        prompt=_as_str("prompt", merged.get("prompt")),
        top_k=_as_int("top_k", merged.get("top_k", base.top_k)),
        max_new_tokens=_as_int("max_new_tokens", merged.get("max_new_tokens", base.max_new_tokens)),
        confidence_threshold=_as_float(
            "confidence_threshold", merged.get("confidence_threshold", base.confidence_threshold)
        ),
    )


def _refuse_misspelt_fields(settings: Mapping[str, Any]) -> None:
    for key in settings:
        if not isinstance(key, str) or key in OWN_FIELDS:
            continue
        near = difflib.get_close_matches(key.lower(), OWN_FIELDS, n=1, cutoff=_TYPO_CUTOFF)
        if near:
            raise SettingsError(
                key, f"is not a setting of this model; did you mean '{near[0]}'? Its settings: {', '.join(OWN_FIELDS)}"
            )


def _as_task(value: Any) -> str:
    if not isinstance(value, str):
        raise SettingsError("task", f"expected a string, got {type(value).__name__}")
    return value.strip().lower()


def _refuse_fields_of_other_tasks(task: str, merged: Mapping[str, Any]) -> None:
    for field, owner in TASK_OF_FIELD.items():
        if field in merged and owner != task:
            raise SettingsError(
                field,
                f"is used only by task '{owner}', but task is '{task}'; set task to '{owner}' or leave {field} out",
            )


def _as_named_phrases(value: Any) -> dict[str, tuple[str, ...]]:
    """The policy's ``phrases`` and ``phrase_names`` from the ``phrases`` setting: a list or a
    string (each phrase names its boxes), or an object ``{name: phrase}`` (each box named by the
    name whose phrase found it: ``{"car": "a red car"}``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {"phrases": _as_phrases(value)}
    if not value:
        raise SettingsError("phrases", "give at least one phrase: a list, a string like 'cat. dog' or {name: phrase}")
    names, phrases = [], []
    for name, phrase in value.items():
        if not isinstance(phrase, str):
            raise SettingsError(f"phrases.{name}", f"expected a string, got {type(phrase).__name__}")
        names.append(_valid_text("phrases", str(name)).strip())
        phrases.append(_valid_text(f"phrases.{name}", phrase).strip())
    return {"phrases": tuple(phrases), "phrase_names": tuple(names)}


def _as_phrases(value: Any) -> tuple[str, ...]:
    """A list of strings, or one string split on "." and ","; stripped, empty parts dropped,
    duplicates dropped (first kept)."""
    if isinstance(value, str):
        parts = tuple(_PHRASE_SEPARATORS.split(_valid_text("phrases", value)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise SettingsError(f"phrases[{i}]", f"expected a string, got {type(item).__name__}")
            _valid_text(f"phrases[{i}]", item)
        parts = tuple(value)
    else:
        raise SettingsError(
            "phrases",
            f"expected a list of strings, a string like 'cat. dog' or {{name: phrase}}, got {type(value).__name__}",
        )
    phrases = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not phrases:
        raise SettingsError("phrases", "give at least one phrase, as a list or a string like 'cat. dog'")
    return phrases


def _as_regions(value: Any) -> tuple[PixelBox, ...]:
    if not isinstance(value, (list, tuple)):
        raise SettingsError(
            "regions", f"expected a list of [left, top, right, bottom] pixel boxes, got {type(value).__name__}"
        )
    regions = []
    for i, box in enumerate(value):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise SettingsError(f"regions[{i}]", f"expected [left, top, right, bottom], got {box!r}")
        left, top, right, bottom = (_as_float(f"regions[{i}]", v) for v in box)
        regions.append((left, top, right, bottom))
    return tuple(regions)


def _as_str(field: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SettingsError(field, f"expected a string, got {type(value).__name__}")
    return None if value is None else _valid_text(field, value)


def _valid_text(field: str, text: str) -> str:
    """``text`` if it is clean Unicode: no lone surrogate (JSON ``"\\ud800"``) and no U+FFFD,
    which is what undecodable bytes become on the way in."""
    if "\ufffd" in text or any("\ud800" <= c <= "\udfff" for c in text):
        raise SettingsError(
            field,
            "is not valid UTF-8 text (it holds undecodable bytes or a lone surrogate); send the text UTF-8 encoded",
        )
    return text


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
