"""Write a few synthetic scenes (PNG) for ``make demo``: python -m tests.tiny_model.demo FOLDER.

Every scene holds a triangle (the demo asks "What colour is the triangle?" of each), and is
enlarged ``SCALE`` times with nearest-neighbour pixels, so that the pictures ``--draw`` makes are
large enough to read (the tiny model sees 64x64 whatever the size).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image

from .scenes import draw_scene, draw_two_shapes, random_size

SCALE = 3


def write_scenes(folder: Path, count: int = 6, seed: int = 2024) -> list[Path]:
    """``count`` scenes with a triangle, one shape and two shapes in turn, named by what they show."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths: list[Path] = []
    while len(paths) < count:
        if len(paths) % 2:
            image, shapes = draw_two_shapes(rng, *random_size(rng))
        else:
            image, shape = draw_scene(rng, *random_size(rng))
            shapes = (shape,)
        if not any(s.shape == "triangle" for s in shapes):
            continue
        names = "_".join(f"{s.colour}_{s.shape}" for s in shapes)
        path = folder / f"scene_{len(paths)}_{names}.png"
        image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST).save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_scenes(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_output/images")):
        print(written)
