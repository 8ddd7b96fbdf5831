"""Test helpers: reproducible scenes, the cases every end-to-end check runs on, IoU."""

from __future__ import annotations

import json
import random

import numpy as np

from tests.tiny_model.build import iou
from tests.tiny_model.scenes import DrawnShape, draw_scene, draw_two_shapes

# (seed, width, height, colour, shape): square, wide, tall, large and small images, each a scene
# the tiny model captions right (the first seed from 1xx, 2xx, 3xx ... that it gets right).
SCENE_CASES = [
    (201, 64, 64, "red", "circle"),
    (202, 300, 90, "blue", "square"),
    (203, 90, 280, "green", "triangle"),
    (304, 320, 240, "yellow", "circle"),
    (105, 150, 60, "red", "triangle"),
]


# (seed, width, height, ((colour, shape) left, (colour, shape) right) or None for random) of
# two-shape scenes. The tiny model is imperfect (see its build_report.json), so these are scenes
# it gets right: case 0 (a blue circle and a red square) for grounding, region description and a
# colour question; cases 1-4 for every task. tests/test_tasks.py measures its rates on random scenes.
TWO_SHAPE_CASES = [
    (404, 160, 120, (("blue", "circle"), ("red", "square"))),
    (406, 200, 150, None),
    (408, 160, 120, None),
    (409, 160, 120, None),
    (414, 200, 150, None),
]


def two_shapes(seed: int, width: int, height: int, specs) -> tuple[np.ndarray, tuple[DrawnShape, DrawnShape]]:
    """(RGB uint8 array (H, W, 3), the (left, right) shapes) of a reproducible two-shape scene."""
    image, drawn = draw_two_shapes(random.Random(seed), width, height, specs)
    return np.asarray(image), drawn


def scene(seed: int, width: int, height: int, colour=None, shape=None) -> tuple[np.ndarray, DrawnShape]:
    """(RGB uint8 array (H, W, 3), what was drawn) of a reproducible scene."""
    image, drawn = draw_scene(random.Random(seed), width, height, colour, shape)
    return np.asarray(image), drawn


def tlbr_iou(tlbr, drawn: DrawnShape) -> float:
    """IoU of an inclusive pixel [top, left, bottom, right] box with the drawn shape's box."""
    top, left, bottom, right = tlbr
    l2, t2, r2, b2 = drawn.pixel_ltrb
    return iou((left, top, right + 1, bottom + 1), (l2, t2, r2 + 1, b2 + 1))


def canonical(annotation: dict) -> str:
    """An annotation JSON as text, floats rounded to 4 decimals: batch composition may move the
    last bits of a probability; classes, boxes and texts must match exactly."""

    def rounded(value):
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, dict):
            return {key: rounded(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rounded(item) for item in value]
        return value

    return json.dumps(rounded(annotation), sort_keys=True)


__all__ = ["canonical", "SCENE_CASES", "TWO_SHAPE_CASES", "iou", "scene", "tlbr_iou", "two_shapes"]
