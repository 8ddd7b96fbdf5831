"""The shape of every route's ``state``, checked by the front door before any handler runs.

The SDK's handlers read fields of a request's ``state`` as they need them, and a field of the
wrong type (``inference_request_uuid: {}``, ``image_id: {}``, ``projectId: "x"``) became a
500 somewhere inside. Here each field any route reads has one kind (:data:`FIELDS`), checked on
every API route where it appears, and each route names the fields it cannot do without
(:data:`REQUIRED`). A wrong one is a :class:`StateError` (a 400) naming the field and what is
allowed. Fields no route reads pass untouched (the SDK's clients send a few of their own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_ID = 2**63 - 1
MAX_TEXT = 4096


class StateError(ValueError):
    """A field of the request's ``state`` is missing or of the wrong kind; the message says which."""


@dataclass(frozen=True)
class Kind:
    """What a field may hold: ``accepts(value)`` and, for messages, ``description``."""

    description: str
    accepts: Callable[[Any], bool]


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_ID


def _is_count(value: Any) -> bool:
    return type(value) is int and 1 <= value <= 1_000_000


ID = Kind("a positive integer id", _is_id)
ID_OR_NULL = Kind("a positive integer id or null", lambda v: v is None or _is_id(v))
IDS = Kind(
    "a non-empty list of positive integer ids", lambda v: isinstance(v, list) and bool(v) and all(map(_is_id, v))
)
IDS_OR_NULL = Kind(
    "a list of positive integer ids or null", lambda v: v is None or (isinstance(v, list) and all(map(_is_id, v)))
)
COUNT = Kind("a positive integer", _is_count)
COUNT_OR_NULL = Kind("a positive integer or null", lambda v: v is None or _is_count(v))
NON_NEGATIVE = Kind("a non-negative integer", lambda v: type(v) is int and 0 <= v <= 1_000_000)
TEXT = Kind(f"a string of at most {MAX_TEXT} characters", lambda v: isinstance(v, str) and len(v) <= MAX_TEXT)
TEXT_OR_NULL = Kind(f"a string of at most {MAX_TEXT} characters or null", lambda v: v is None or TEXT.accepts(v))
REQUEST_ID = Kind(
    "the request id string an asynchronous route returned", lambda v: isinstance(v, str) and 0 < len(v) <= 200
)
OBJECT = Kind("a JSON object", lambda v: isinstance(v, dict))
OBJECT_OR_NULL = Kind("a JSON object or null", lambda v: v is None or isinstance(v, dict))
FLAG = Kind("true or false", lambda v: isinstance(v, bool))

# Every field of ``state`` that a route reads, and its one kind.
FIELDS: dict[str, Kind] = {
    "settings": OBJECT_OR_NULL,
    "rectangle": OBJECT_OR_NULL,
    "batch_size": COUNT_OR_NULL,
    "image_id": ID,
    "imageId": ID,
    "image_ids": IDS,
    "images_ids": IDS,
    "imageIds": IDS,
    "batch_ids": IDS,
    "projectId": ID,
    "project_id": ID,
    "dataset_ids": IDS_OR_NULL,
    "datasetIds": IDS_OR_NULL,
    "output_project_id": ID_OR_NULL,
    "upload_mode": TEXT_OR_NULL,
    "model_prediction_suffix": TEXT_OR_NULL,
    "cache_project_on_model": FLAG,
    "inference_request_uuid": REQUEST_ID,
    "num_iterations": COUNT,
    "num_warmup": NON_NEGATIVE,
    "image_url": TEXT,
    "deploy_params": OBJECT,
    "model_name": TEXT_OR_NULL,
    "video_id": ID,
    "videoId": ID,
}

# Per route, the fields it cannot do without: any one of each tuple.
_REQUEST_ID_ONLY: tuple[tuple[str, ...], ...] = (("inference_request_uuid",),)
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "/inference_image_id": (("image_id", "imageId", "image_ids", "images_ids", "imageIds", "batch_ids"),),
    "/inference_image_id_async": (("image_id", "imageId", "image_ids", "images_ids", "imageIds", "batch_ids"),),
    "/inference_batch_ids": (("batch_ids", "image_ids", "images_ids", "imageIds", "image_id", "imageId"),),
    "/inference_batch_ids_async": (("batch_ids", "image_ids", "images_ids", "imageIds", "image_id", "imageId"),),
    "/inference_project_id_async": (("projectId", "project_id"),),
    "/run_speedtest": (("projectId",), ("num_iterations",), ("batch_size",)),
    "/get_inference_progress": _REQUEST_ID_ONLY,
    "/pop_inference_results": _REQUEST_ID_ONLY,
    "/get_inference_result": _REQUEST_ID_ONLY,
    "/stop_inference": _REQUEST_ID_ONLY,
    "/clear_inference_request": _REQUEST_ID_ONLY,
    "/get_preparing_progress": _REQUEST_ID_ONLY,
    "/get_inference_status": _REQUEST_ID_ONLY,
    "/inference_image_url": (("image_url",),),
    "/inference_video_id": (("video_id", "videoId"),),
    "/inference_video_id_async": (("video_id", "videoId"),),
    "/deploy_from_api": (("deploy_params",),),
}
# Fields inside ``state.deploy_params``.
DEPLOY_FIELDS: dict[str, Kind] = {
    "model_source": TEXT_OR_NULL,
    "device": TEXT_OR_NULL,
    "runtime": TEXT_OR_NULL,
    "model_info": OBJECT_OR_NULL,
    "model_files": OBJECT_OR_NULL,
    "classes": Kind(
        'a list of class names, an object {"name": "phrase"}, a string of names or null',
        lambda v: v is None or isinstance(v, (list, dict, str)),
    ),
}


def check_state(path: str, state: dict[str, Any]) -> None:
    """:class:`StateError` unless ``state`` holds what ``path`` needs, each field of its kind."""
    for names in REQUIRED.get(path, ()):
        if not any(state.get(name) is not None for name in names):
            first = names[0]
            others = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
            raise StateError(f"{first}{others}: required, {FIELDS[first].description}")
    _check_fields(state, FIELDS, "")
    if isinstance(state.get("deploy_params"), dict):
        _check_fields(state["deploy_params"], DEPLOY_FIELDS, "deploy_params.")


def _check_fields(holder: dict[str, Any], kinds: dict[str, Kind], prefix: str) -> None:
    for name, kind in kinds.items():
        if name in holder and not kind.accepts(holder[name]):
            raise StateError(f"{prefix}{name}: expected {kind.description}, got {_shown(holder[name])}")


def _shown(value: Any) -> str:
    """A short, safe description of a wrong value: its JSON type, and small scalars themselves."""
    if isinstance(value, bool) or value is None or (isinstance(value, (int, float)) and abs(value) < 1e15):
        return repr(value)
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    kind = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else type(value).__name__
    return f"a JSON {kind}"
