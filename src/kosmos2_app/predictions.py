"""Engine output to Supervisely prediction DTOs, and stable class colours. Pure functions."""

from __future__ import annotations

import colorsys
import hashlib

from supervisely.nn.prediction_dto import PredictionBBox

from kosmos2_engine import GroundedText, box_to_pixel_tlbr

SCORE_DECIMALS = 4


def grounded_to_bboxes(grounded: GroundedText, width: int, height: int) -> list[PredictionBBox]:
    """One ``PredictionBBox`` per box of every grounded phrase, named by the phrase.

    Boxes are inclusive pixel ``[top, left, bottom, right]`` in the ``width`` x ``height``
    original image, clipped to it; scores are the engine's box confidences.
    """
    return [
        PredictionBBox(phrase.phrase, list(box_to_pixel_tlbr(box.xyxy, width, height)),
                       round(box.score, SCORE_DECIMALS))
        for phrase in grounded.phrases
        for box in phrase.boxes
    ]


def class_colour(name: str) -> list[int]:
    """An RGB colour that depends only on the class name, bright enough to see on images."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    hue, value = digest[0] / 255.0, 0.75 + 0.25 * digest[1] / 255.0
    return [round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.85, value)]
