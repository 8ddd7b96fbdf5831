"""Engine results to Supervisely prediction DTOs, and stable class colours. Pure functions.

Besides the SDK's ``PredictionBBox``, two DTOs carry text: :class:`ImageText` becomes an image
tag (``caption`` or ``answer``), :class:`DescribedRegion` a rectangle with a ``description``
tag. :class:`~.annotations.AnnotationBuilder` turns them into labels and tags; a result's
``data`` is :func:`result_data`.
"""

from __future__ import annotations

import colorsys
import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from supervisely.nn.prediction_dto import PredictionBBox

from kosmos2_engine import TASK_TABLE, TaskResult, box_to_pixel_xyxy

SCORE_DECIMALS = 4
REGION_CLASS = "region"
CONFIDENCE_TAG = "confidence"  # a predicted box's score (the SDK's name for it)
MASK_QUALITY_TAG = "mask_quality"  # SAM 2's estimate of a mask's IoU (masks: true)
DESCRIPTION_TAG = "description"  # the text of a region_description row, a tag on each region
TEXT_TAGS = tuple(
    dict.fromkeys(task.text.value for task in TASK_TABLE.values() if task.text)
)  # caption, answer, description


@dataclass(frozen=True)
class ImageText:
    """Text about the whole image: the value of image tag ``tag``."""

    tag: str
    value: str


class DescribedRegion(PredictionBBox):
    """A requested region, its pixel ``[top, left, bottom, right]`` box, and what the model says
    it is. No score: the box was given, not predicted."""

    def __init__(self, class_name: str, bbox_tlbr: list[int], description: str):
        super().__init__(class_name, bbox_tlbr, None)
        self.description = description


def result_to_predictions(result: TaskResult, width: int, height: int) -> list:
    """DTOs of one image's result: boxes (inclusive pixel tlbr, clipped to the ``width`` x
    ``height`` image, named by phrase), the text as an :class:`ImageText` (tag named by what
    the task's text is: caption or answer), and one :class:`DescribedRegion` per requested
    region."""
    predictions: list = [
        PredictionBBox(box.name, pixel_tlbr(box.xyxy, width, height), round(box.score, SCORE_DECIMALS))
        for box in result.boxes
    ]
    if result.text:
        predictions.append(ImageText(text_tag(result), result.text))
    predictions += [
        DescribedRegion(REGION_CLASS, [top, left, bottom, right], description)
        for (left, top, right, bottom), description in zip(result.regions, result.descriptions)
    ]
    return predictions


def shifted(predictions: list, rows: int, columns: int) -> list:
    """The DTOs with every box moved ``rows`` down and ``columns`` right (from a crop's pixels
    into the whole image's); text unchanged."""
    moved = []
    for dto in predictions:
        if isinstance(dto, PredictionBBox):
            top, left, bottom, right = dto.bbox_tlbr
            dto = copy.copy(dto)
            dto.bbox_tlbr = [top + rows, left + columns, bottom + rows, right + columns]
        moved.append(dto)
    return moved


def pixel_tlbr(xyxy, width: int, height: int) -> list[int]:
    """A normalised xyxy box as Supervisely's inclusive pixel ``[top, left, bottom, right]``
    in a ``width`` x ``height`` image (the only place the adapter changes box convention)."""
    left, top, right, bottom = box_to_pixel_xyxy(xyxy, width, height)
    return [top, left, bottom, right]


def text_tag(result: TaskResult) -> str:
    """The name of the tag (and ``data`` key) a result's text goes under: caption, answer..."""
    kind = TASK_TABLE[result.task].text
    return kind.value if kind is not None else ""


def result_data(result: TaskResult) -> dict:
    """A result's ``data`` in the response: the task, and its text as ``caption`` / ``answer``
    (when there is text) or ``descriptions`` (when regions were described)."""
    data: dict = {"task": result.task}
    if result.text:
        data[text_tag(result)] = result.text
    if result.descriptions:
        data["descriptions"] = list(result.descriptions)
    return data


def class_colour(name: str) -> list[int]:
    """An RGB colour that depends only on the class name, bright enough to see on images."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    hue, value = digest[0] / 255.0, 0.75 + 0.25 * digest[1] / 255.0
    return [round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.85, value)]


def result_json(
    annotation, result: TaskResult, frame_index: int | None = None, video=None, propagated_from: int | None = None
) -> dict[str, Any]:
    """One image's result as the SDK formats it (``Prediction.to_json()`` plus ``data``): every
    field the SDK's clients read, in its order, the annotation serialised once. A video frame's
    result has its ``frame_index``, and ``video`` (with ``video_id``, ``dataset_id`` and
    ``project_id``) says where it came from. A frame whose masks were carried from key frame
    ``propagated_from`` (``result`` being that key frame's) has its task and that index as
    ``data``, and no text."""
    data = result_data(result) if propagated_from is None else {"task": result.task, "propagated_from": propagated_from}
    return {
        "source": None, "annotation": annotation.to_json(), "name": None, "path": None, "url": None,
        "project_id": getattr(video, "project_id", None), "dataset_id": getattr(video, "dataset_id", None),
        "image_id": None, "video_id": getattr(video, "video_id", None), "frame_index": frame_index,
        "slides_data": data, "data": data,
    }  # fmt: skip
