"""Engine results to Supervisely prediction DTOs, and stable class colours. Pure functions.

Besides the SDK's ``PredictionBBox``, two DTOs carry text: :class:`ImageText` becomes an image
tag (``caption`` or ``answer``), :class:`DescribedRegion` a rectangle with a ``description``
tag. The adapter's ``_predictions_to_annotation`` and ``_create_label`` turn them into labels.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from supervisely.nn.prediction_dto import PredictionBBox

from kosmos2_engine import TaskResult, box_to_pixel_tlbr

SCORE_DECIMALS = 4
REGION_CLASS = "region"
CAPTION_TAG, ANSWER_TAG, DESCRIPTION_TAG = "caption", "answer", "description"
TEXT_TAGS = (CAPTION_TAG, ANSWER_TAG, DESCRIPTION_TAG)


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


def result_to_predictions(result: TaskResult, width: int, height: int, regions: Sequence[Sequence[float]] = ()) -> list:
    """DTOs of one image's result: boxes (inclusive pixel tlbr, clipped to the ``width`` x
    ``height`` image, named by phrase), the text as an :class:`ImageText`, and one
    :class:`DescribedRegion` per pixel ``[left, top, right, bottom]`` region."""
    predictions: list = [
        PredictionBBox(box.name, list(box_to_pixel_tlbr(box.xyxy, width, height)), round(box.score, SCORE_DECIMALS))
        for box in result.boxes
    ]
    if result.text:
        predictions.append(ImageText(ANSWER_TAG if result.task == "vqa" else CAPTION_TAG, result.text))
    predictions += [
        DescribedRegion(REGION_CLASS, region_to_tlbr(region, width, height), description)
        for region, description in zip(regions, result.descriptions)
    ]
    return predictions


def annotation_text(ann) -> dict:
    """The model's text in a ``sly.Annotation``: ``{"caption" | "answer": str}`` from the image
    tags, and ``"descriptions"``, the region descriptions in label order (absent when none)."""
    text = {tag.name: tag.value for tag in ann.img_tags if tag.name in (CAPTION_TAG, ANSWER_TAG)}
    descriptions = [tag.value for label in ann.labels for tag in label.tags if tag.name == DESCRIPTION_TAG]
    if descriptions:
        text["descriptions"] = descriptions
    return text


def region_to_tlbr(region: Sequence[float], width: int, height: int) -> list[int]:
    """Pixel ``[left, top, right, bottom]`` (maybe fractional) to integer inclusive
    ``[top, left, bottom, right]`` inside the image."""
    left, top, right, bottom = region
    clip = lambda value, size: min(max(value, 0), size - 1)
    return [
        clip(math.floor(top), height),
        clip(math.floor(left), width),
        clip(math.ceil(bottom), height),
        clip(math.ceil(right), width),
    ]


def class_colour(name: str) -> list[int]:
    """An RGB colour that depends only on the class name, bright enough to see on images."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    hue, value = digest[0] / 255.0, 0.75 + 0.25 * digest[1] / 255.0
    return [round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.85, value)]
