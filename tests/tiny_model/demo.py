"""Write a few synthetic scenes (PNG) for ``make demo``: python -m tests.tiny_model.demo FOLDER."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from .scenes import draw_scene, random_size


def write_scenes(folder: Path, count: int = 6, seed: int = 2024) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        image, drawn = draw_scene(rng, *random_size(rng))
        path = folder / f"scene_{index}_{drawn.colour}_{drawn.shape}.png"
        image.save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_scenes(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_output/images")):
        print(written)
