"""The README's sample images: python -m tests.tiny_model.samples [FOLDER] (``make samples``).

* ``blue_square.png``: 300x90, a blue square;
* ``shapes.png``: 200x150, a yellow square on the left and a red triangle on the right;
* ``moving_square.mp4``: 12 frames of 160x120, a yellow square moving right 6 pixels a frame.

Both are scenes the tiny test model reads right on every task, so the README's examples show
what each task does.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tests.support.videos import moving_square_video

from .scenes import draw_scene, draw_two_shapes

SAMPLES = {
    "blue_square.png": lambda: draw_scene(random.Random(202), 300, 90, "blue", "square")[0],
    "shapes.png": lambda: draw_two_shapes(random.Random(11), 200, 150, (("yellow", "square"), ("red", "triangle")))[0],
}


def write_samples(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in SAMPLES.items():
        draw().save(folder / name)
        paths.append(folder / name)
    paths.append(moving_square_video(folder / "moving_square.mp4"))
    return paths


if __name__ == "__main__":
    for path in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "samples")):
        print(path)
