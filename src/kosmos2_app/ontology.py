"""The classes a deploy declares, and what ``classes`` in a request's settings asks for.

Supervisely's apps read a model's classes from its meta (the Predict App will not start until
one is selected) and send the chosen ones back as ``settings["classes"]``. An :class:`Ontology`
maps each declared class name to the phrase Kosmos-2 grounds to find it (``"car": "a car"``; a
plain name is its own phrase), and says its geometry: ``rectangle`` (the default) or ``mask``
(``"car": {"phrase": "a car", "geometry": "mask"}``: declared as a Bitmap class, its boxes
segmented by SAM 2 on every request). Declared classes are in the model meta from the deploy on.

``classes`` in a request means **find these** (:func:`find_settings`) when the task is the
default caption, or phrase grounding without phrases: every class's phrase is grounded on the
image, from one vision pass, and each box is a label of the class whose phrase found it. A name
the ontology lacks is grounded by its own words (open vocabulary). ``classes`` may also be an
object ``{name: phrase}``: those phrases, for this request only. With any other task,
``classes`` keeps the SDK's meaning: labels of other classes are left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kosmos2_engine import MAX_PHRASES, SettingsError

# COCO's 80 object categories: the default declaration, so that a fresh deploy offers classes.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
MAX_CLASSES = 1000  # declared at deploy
MAX_NAME_CHARS = 200
FIND_TASKS = (None, "caption")  # tasks that ``classes`` turns into finding those classes


GEOMETRIES = ("rectangle", "mask")


@dataclass(frozen=True)
class Ontology:
    """Declared classes, in order: ``phrases[name]`` is the phrase grounded to find ``name``;
    ``masked``: the names declared with geometry ``mask``."""

    phrases: Mapping[str, str]
    masked: frozenset[str] = frozenset()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.phrases)

    def phrase_of(self, name: str) -> str:
        """The declared phrase of ``name``; a name not declared is its own phrase."""
        return self.phrases.get(name, name)

    @classmethod
    def parse(cls, value: Any, field: str = "classes", limit: int = MAX_CLASSES) -> Ontology:
        """From a list of names, an object ``{name: phrase}`` or ``{name: {"phrase": phrase,
        "geometry": "rectangle" | "mask"}}`` (both keys optional), or text: JSON of these, or
        names separated by commas or new lines. :class:`SettingsError` naming ``field`` when
        it is none of these, empty, or longer than ``limit``."""
        if isinstance(value, str):
            value = _from_text(value, field)
        if isinstance(value, list):
            value = {_name(f"{field}[{i}]", name): name for i, name in enumerate(value)}
        if not isinstance(value, dict):
            raise SettingsError(
                field, f'expected a list of class names or {{"name": "phrase"}}, got {type(value).__name__}'
            )
        if not value:
            raise SettingsError(field, "give at least one class name")
        if len(value) > limit:
            raise SettingsError(field, f"at most {limit} classes, got {len(value)}")
        phrases, masked = {}, set()
        for name, entry in value.items():
            name = _name(field, name)
            phrase, geometry = _entry(f"{field}.{name}", name, entry)
            phrases[name] = phrase
            if geometry == "mask":
                masked.add(name)
        return cls(phrases, frozenset(masked))

    @classmethod
    def default(cls) -> Ontology:
        return cls({name: name for name in COCO_CLASSES})


def _from_text(text: str, field: str) -> Any:
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as error:
            raise SettingsError(field, f"is not valid JSON: {error.msg} at character {error.pos}") from None
    return [part.strip() for part in stripped.replace("\n", ",").split(",") if part.strip()]


def _entry(field: str, name: str, entry: Any) -> tuple[str, str]:
    """(phrase, geometry) of one declared class: a phrase, or ``{"phrase", "geometry"}``."""
    if not isinstance(entry, dict):
        return _name(field, entry), "rectangle"
    unknown = sorted(set(entry) - {"phrase", "geometry"})
    if unknown:
        raise SettingsError(field, f"takes 'phrase' and 'geometry', not {', '.join(map(repr, unknown))}")
    geometry = entry.get("geometry", "rectangle")
    if geometry not in GEOMETRIES:
        raise SettingsError(f"{field}.geometry", f"one of {', '.join(GEOMETRIES)}, got {geometry!r}")
    return _name(f"{field}.phrase", entry.get("phrase", name)), geometry


def _name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise SettingsError(field, f"expected a name of 1..{MAX_NAME_CHARS} characters, got {value!r}")
    return value.strip()


def requested_classes(settings: Mapping[str, Any]) -> Any:
    """``settings["classes"]``, or None when it asks for every class (absent, null or "all")."""
    classes = settings.get("classes")
    return None if classes is None or classes == "all" else classes


def finds_classes(settings: Mapping[str, Any]) -> bool:
    """Whether ``settings`` ask to find their ``classes`` (see the module docstring)."""
    if requested_classes(settings) is None:
        return False
    task = settings.get("task")
    task = task.strip().lower() if isinstance(task, str) else task  # as the engine reads it
    return task in FIND_TASKS or (task == "phrase_grounding" and settings.get("phrases") is None)


def find_settings(settings: Mapping[str, Any], ontology: Ontology) -> dict[str, Any]:
    """``settings`` as the engine reads them: when they ask to find their ``classes`` (at most
    one prompt each, :data:`~kosmos2_engine.MAX_PHRASES`), phrase grounding of each class's
    phrase (a phrase the request gives, ``{name: phrase}``, over the ontology's), boxes named by
    class; otherwise unchanged."""
    if not finds_classes(settings):
        return dict(settings)
    asked = Ontology.parse(requested_classes(settings), limit=MAX_PHRASES)
    phrases = {name: ontology.phrase_of(name) if phrase == name else phrase for name, phrase in asked.phrases.items()}
    return {**settings, "task": "phrase_grounding", "phrases": phrases}
