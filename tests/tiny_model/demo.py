"""Write a few synthetic scenes (PNG) for ``make demo``: python -m tests.tiny_model.demo FOLDER."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from .scenes import draw_scene, draw_two_shapes, random_size


def write_scenes(folder: Path, count: int = 6, seed: int = 2024) -> list[Path]:
    """``count`` scenes, one shape and two shapes in turn, named by what they show."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        if index % 2:
            image, shapes = draw_two_shapes(rng, *random_size(rng))
        else:
            image, shape = draw_scene(rng, *random_size(rng))
            shapes = (shape,)
        names = "_".join(f"{s.colour}_{s.shape}" for s in shapes)
        path = folder / f"scene_{index}_{names}.png"
        image.save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_scenes(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_output/images")):
        print(written)
