"""Synthetic scenes for the tiny Kosmos-2: one or two coloured shapes on a plain background.

Every scene is drawn from a ``random.Random``, so a seed gives the same picture everywhere.
Boxes are normalised xyxy of the drawn shape's bounding box; pixel boxes are inclusive
``(left, top, right, bottom)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 80, 220),
    "yellow": (225, 195, 30),
}
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class DrawnShape:
    """What was drawn: names and where, as normalised xyxy and inclusive pixel ltrb."""

    colour: str
    shape: str
    xyxy: tuple[float, float, float, float]
    pixel_ltrb: tuple[int, int, int, int]

    @property
    def phrase(self) -> str:
        return f"a {self.colour} {self.shape}"


def draw_scene(
    rng: random.Random, width: int, height: int, colour: str | None = None, shape: str | None = None
) -> tuple[Image.Image, DrawnShape]:
    """An RGB ``width`` x ``height`` image with one shape covering 25-70 % of each side."""
    colour = colour or rng.choice(sorted(COLOURS))
    shape = shape or rng.choice(SHAPES)
    grey = rng.randint(215, 250)
    image = Image.new("RGB", (width, height), (grey, grey, grey))
    box_w = max(2, round(width * rng.uniform(0.25, 0.7)))
    box_h = max(2, round(height * rng.uniform(0.25, 0.7)))
    left, top = rng.randint(0, width - box_w), rng.randint(0, height - box_h)
    ltrb = (left, top, left + box_w - 1, top + box_h - 1)
    _draw_shape(ImageDraw.Draw(image), shape, ltrb, COLOURS[colour])
    xyxy = (left / width, top / height, (left + box_w) / width, (top + box_h) / height)
    return image, DrawnShape(colour, shape, xyxy, ltrb)


def draw_two_shapes(
    rng: random.Random, width: int, height: int, specs: tuple[tuple[str, str], tuple[str, str]] | None = None
) -> tuple[Image.Image, tuple[DrawnShape, DrawnShape]]:
    """Two shapes of different kinds, side by side, left one first.

    The image is split at a random column between 40 % and 60 % of the width; each shape lies
    in its own part and covers 50-95 % of that part's width and 30-80 % of the height.
    ``specs`` gives ((colour, shape), (colour, shape)) left to right; random by default.
    """
    if specs is None:
        kinds = rng.sample(SHAPES, 2)
        specs = ((rng.choice(sorted(COLOURS)), kinds[0]), (rng.choice(sorted(COLOURS)), kinds[1]))
    grey = rng.randint(215, 250)
    image = Image.new("RGB", (width, height), (grey, grey, grey))
    split = round(width * rng.uniform(0.4, 0.6))
    drawn = []
    for (colour, shape), (x0, x1) in zip(specs, ((0, split), (split, width))):
        part = x1 - x0
        box_w = max(2, round(part * rng.uniform(0.5, 0.95)))
        box_h = max(2, round(height * rng.uniform(0.3, 0.8)))
        left, top = x0 + rng.randint(0, part - box_w), rng.randint(0, height - box_h)
        ltrb = (left, top, left + box_w - 1, top + box_h - 1)
        _draw_shape(ImageDraw.Draw(image), shape, ltrb, COLOURS[colour])
        xyxy = (left / width, top / height, (left + box_w) / width, (top + box_h) / height)
        drawn.append(DrawnShape(colour, shape, xyxy, ltrb))
    return image, (drawn[0], drawn[1])


def random_size(rng: random.Random) -> tuple[int, int]:
    """A width and height from 48 to 320 pixels, aspect ratios up to about 1:4."""
    return rng.randint(48, 320), rng.randint(48, 320)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, ltrb, fill) -> None:
    left, top, right, bottom = ltrb
    if shape == "circle":
        draw.ellipse(ltrb, fill=fill)
    elif shape == "square":
        draw.rectangle(ltrb, fill=fill)
    elif shape == "triangle":
        draw.polygon([((left + right) / 2, top), (left, bottom), (right, bottom)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
