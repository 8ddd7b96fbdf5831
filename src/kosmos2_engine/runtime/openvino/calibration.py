"""Calibration images for quantising the image encoder's activations (``--weights int8-act``).

By default the export draws its own: seeded scenes of coloured circles, squares and triangles on
grey and gradient backgrounds, the kind of picture every grounding model reads. ``--calibration
FOLDER`` takes the user's own images instead (every decodable image under it, sorted, up to
:data:`MAX_IMAGES`), which matches the activations of their data better.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GENERATED_IMAGES = 64
MAX_IMAGES = 300
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
GENERATED_SOURCE = "generated-shapes-v1"  # recorded in the export's fingerprint
_COLOURS = ((215, 40, 40), (40, 165, 60), (45, 80, 220), (225, 195, 30), (20, 20, 20), (250, 250, 250))


def generated_scenes(count: int = GENERATED_IMAGES, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB uint8 (H, W, 3) scenes of one to three shapes, the same on every machine."""
    rng = random.Random(seed)
    return [_scene(rng) for _ in range(count)]


def _scene(rng: random.Random) -> np.ndarray:
    width, height = rng.randint(160, 400), rng.randint(120, 300)
    low, high = rng.randint(60, 200), rng.randint(150, 250)
    ramp = np.linspace(low, high, width, dtype=np.float32)[None, :, None]
    image = Image.fromarray(np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8).copy())
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        w, h = rng.randint(width // 6, width // 2), rng.randint(height // 6, height // 2)
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        box, colour = (left, top, left + w, top + h), rng.choice(_COLOURS)
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(left + w // 2, top), (left + w, top + h), (left, top + h)], fill=colour)
    return np.asarray(image)


def folder_images(folder: Path) -> Iterator[np.ndarray]:
    """The decodable images under ``folder`` (sorted by path, at most :data:`MAX_IMAGES`), RGB;
    a ``ValueError`` when there is none."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    found = 0
    for path in paths:
        if found == MAX_IMAGES:
            return
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        found += 1
        yield pixels
    if not found:
        raise ValueError(f"--calibration: no image under '{folder}' could be read ({', '.join(IMAGE_SUFFIXES)})")
