"""Generated videos the tiny Kosmos-2 knows: a yellow square moving across a grey frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.tiny_model.scenes import COLOURS

SIDE = 50  # the square's side in pixels


def square_at(frame: int, width: int) -> tuple[int, int, int, int]:
    """Inclusive pixel (left, top, right, bottom) of the square on ``frame``: it moves right
    by 6 pixels a frame from x = 10, wrapping before the edge."""
    travel = width - SIDE - 10
    left = 10 + (frame * 6) % travel
    return left, 30, left + SIDE - 1, 30 + SIDE - 1


def moving_square_frames(frames: int, width: int = 160, height: int = 120) -> list[np.ndarray]:
    """RGB uint8 (height, width, 3) frames of the square at :func:`square_at`."""
    out = []
    for index in range(frames):
        image = Image.new("RGB", (width, height), (235, 235, 235))
        ImageDraw.Draw(image).rectangle(square_at(index, width), fill=COLOURS["yellow"])
        out.append(np.asarray(image))
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """``frames`` as an MPEG-4 video at ``path``."""
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def moving_square_video(path: Path, frames: int = 12, width: int = 160, height: int = 120) -> Path:
    """The moving square as a video of ``frames`` frames at ``path``."""
    return write_video(path, moving_square_frames(frames, width, height))
