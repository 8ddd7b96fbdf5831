"""The labelling toolbox's selected box. With a box selected, NN Image Labeling sends a
prompt-based model ``mode: "reference_image"`` with ``reference_bbox`` (the box, pixel
``[top, left, bottom, right]`` of the image, Supervisely's order), ``reference_image_id`` (the
image the box is on: the one being labelled) and ``reference_class_name`` (the box's class).

For Kosmos-2 the box is a region to look at, and one result per image says two things:

* what it is: Kosmos-2's description of the box, read on the whole image (its context
  included), a ``region`` rectangle with a ``description`` tag, as task ``region_description``
  gives;
* what is inside it: the request's ``classes`` (else the box's ``reference_class_name``)
  grounded in the crop of the box, so that the model sees the region at its full input
  resolution, each box mapped back into the whole image and cut to the selected box.

The two run as two requests on the batcher (the whole image and the crop are two different
views, two vision passes) and are merged by :func:`merged`. ``mode: "text_prompt"`` (or no
``mode``) is the ordinary request. An ROI ``rectangle`` sent as well must hold the box: the box
is the region the model looks at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from kosmos2_engine import NamedBox, TaskResult

from .http.errors import bad_request
from .ontology import requested_classes
from .regions_of_interest import ROI_SETTINGS, Crop, crops_of

MODE = "mode"
REFERENCE_MODE = "reference_image"
TEXT_MODE = "text_prompt"
BOX_FIELD = "reference_bbox"
CLASS_FIELD = "reference_class_name"
REFERENCE_FIELDS = (MODE, BOX_FIELD, "reference_image_id", CLASS_FIELD)
SHARED_SETTINGS = ("max_new_tokens", "confidence_threshold", "conf")  # what both requests keep


@dataclass(frozen=True)
class ReferenceBox:
    """The selected box (inclusive pixels of the whole image) and the classes to find in it
    (as ``settings["classes"]`` takes them), None to describe it only."""

    box: Crop
    classes: Any | None

    def description_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Settings of the whole-image request: a description of the box."""
        region = [self.box.left, self.box.top, self.box.right, self.box.bottom]
        return {**_shared(settings), "task": "region_description", "regions": [region]}

    def grounding_settings(self, settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """Settings of the crop's request: its classes found (see :mod:`.ontology`), or None."""
        return None if self.classes is None else {**_shared(settings), "classes": self.classes}

    def submit(
        self,
        images: Sequence[np.ndarray],
        settings: Mapping[str, Any],
        submit_views: Callable[[Sequence[np.ndarray], dict[str, Any]], Future],
    ) -> Future:
        """Both requests for whole RGB (H, W, 3) ``images`` through ``submit_views(views,
        settings)`` (the app's way onto the batcher); the future of one merged
        :class:`~kosmos2_engine.TaskResult` per image."""
        sizes = [(image.shape[1], image.shape[0]) for image in images]
        for width, height in sizes:
            self.check_inside(width, height)
        grounding = self.grounding_settings(settings)
        inside = None if grounding is None else submit_views([self.box.of(image) for image in images], grounding)
        described = submit_views(images, self.description_settings(settings))

        def merge(descriptions: list[TaskResult], found: list[TaskResult] | None) -> list[TaskResult]:
            found_per_image: Sequence[TaskResult | None] = found or [None] * len(descriptions)
            return [merged(*pair, self, *size) for pair, size in zip(zip(descriptions, found_per_image), sizes)]

        return _joined(described, inside, merge)

    def check_inside(self, width: int, height: int) -> None:
        """A 400 naming ``reference_bbox`` unless the box lies in a ``width`` x ``height`` image."""
        if self.box.bottom >= height or self.box.right >= width:
            raise bad_request(
                f"{BOX_FIELD}: [{self.box.top}, {self.box.left}, {self.box.bottom}, {self.box.right}] "
                f"(top, left, bottom, right) does not lie inside the {width}x{height} image"
            )


def reference_box(settings: Mapping[str, Any], image_count: int) -> ReferenceBox | None:
    """The selected box of a toolbox request, None for an ordinary one; a 400 naming the field
    when ``mode`` or the box is not what the toolbox sends."""
    mode = settings.get(MODE)
    if mode is None or mode == TEXT_MODE:
        if settings.get(BOX_FIELD) is not None:
            raise bad_request(f"{BOX_FIELD}: is read only with {MODE} '{REFERENCE_MODE}'; set it or leave the box out")
        return None
    if mode != REFERENCE_MODE:
        raise bad_request(f"{MODE}: expected '{TEXT_MODE}' or '{REFERENCE_MODE}', got {mode!r}")
    box = _box(settings.get(BOX_FIELD))
    roi = crops_of({key: settings.get(key) for key in ROI_SETTINGS}, image_count)
    for crop in roi or ():
        inside = crop.top <= box.top and crop.left <= box.left and box.bottom <= crop.bottom and box.right <= crop.right
        if not inside:
            raise bad_request(f"{BOX_FIELD}: the selected box must lie inside the region of interest (rectangle)")
    classes = requested_classes(settings)
    if classes is None and settings.get(CLASS_FIELD) is not None:
        classes = [settings[CLASS_FIELD]]
    return ReferenceBox(box, classes)


def merged(description: TaskResult, inside: TaskResult | None, reference: ReferenceBox, width: int, height: int):
    """One result for the ``width`` x ``height`` image: the box's description, and the boxes
    found in its crop (``inside``, normalised to the crop) normalised to the whole image and
    cut to the box."""
    if inside is None:
        return description
    box = reference.box
    crop_width, crop_height = box.right - box.left + 1, box.bottom - box.top + 1
    found = []
    for named in inside.boxes:
        x0, y0, x1, y1 = named.xyxy
        xyxy = (
            (box.left + x0 * crop_width) / width,
            (box.top + y0 * crop_height) / height,
            (box.left + x1 * crop_width) / width,
            (box.top + y1 * crop_height) / height,
        )
        found.append(NamedBox(named.name, xyxy, named.score))
    return TaskResult(description.task, description.text, tuple(found), description.descriptions, description.regions)


def _joined(described: Future, inside: Future | None, merge: Callable) -> Future:
    """The future of ``merge(described's result, inside's result or None)``, done when both are."""
    joined: Future = Future()

    def finish(_: Future | None = None) -> None:
        try:
            results = merge(described.result(), None if inside is None else inside.result())
        except BaseException as error:  # noqa: BLE001 - the caller's future carries it
            joined.set_exception(error)
        else:
            joined.set_result(results)

    described.add_done_callback(finish if inside is None else lambda _: inside.add_done_callback(finish))
    return joined


def _shared(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {key: settings[key] for key in SHARED_SETTINGS if settings.get(key) is not None}


def _box(value: Any) -> Crop:
    numbers = (
        isinstance(value, list | tuple)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not numbers or min(value) < 0 or value[0] > value[2] or value[1] > value[3]:
        raise bad_request(
            f"{BOX_FIELD}: expected the selected box as pixels [top, left, bottom, right] with top <= bottom "
            f"and left <= right, all >= 0, got {value!r}"
        )
    top, left, bottom, right = (round(v) for v in value)
    return Crop(top, left, bottom, right)
