"""Test helpers: reproducible scenes, the cases every end-to-end check runs on, IoU."""

from __future__ import annotations

import random

import numpy as np

from tests.tiny_model.build import iou
from tests.tiny_model.scenes import DrawnShape, draw_scene

# (seed, width, height, colour, shape): square, wide, tall, large and small images.
SCENE_CASES = [
    (101, 64, 64, "red", "circle"),
    (102, 300, 90, "blue", "square"),
    (103, 90, 280, "green", "triangle"),
    (104, 320, 240, "yellow", "circle"),
    (105, 150, 60, "red", "triangle"),
]


def scene(seed: int, width: int, height: int, colour=None, shape=None) -> tuple[np.ndarray, DrawnShape]:
    """(RGB uint8 array (H, W, 3), what was drawn) of a reproducible scene."""
    image, drawn = draw_scene(random.Random(seed), width, height, colour, shape)
    return np.asarray(image), drawn


def tlbr_iou(tlbr, drawn: DrawnShape) -> float:
    """IoU of an inclusive pixel [top, left, bottom, right] box with the drawn shape's box."""
    top, left, bottom, right = tlbr
    l2, t2, r2, b2 = drawn.pixel_ltrb
    return iou((left, top, right + 1, bottom + 1), (l2, t2, r2 + 1, b2 + 1))


__all__ = ["SCENE_CASES", "iou", "scene", "tlbr_iou"]
