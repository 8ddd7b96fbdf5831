"""Images in: the inputs the engine takes, their sizes, RGB conversion, and a shared thread pool
for per-image work that releases the GIL (decoding, resizing).

An image is an ``np.ndarray`` (H, W[, 1|3|4]) uint8, a PIL image of any mode, or a
:class:`SizedImage` (already squashed to the model's input, standing for a larger one); sizes
are ``(width, height)`` in pixels.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class SizedImage:
    """An image already squashed to the model's square input, standing for the original.

    Attributes:
        pixels: RGB PIL image of S x S pixels (S: the model's image size, 224 for Kosmos-2).
        size: ``(width, height)`` of the original in pixels; boxes come back in its pixels.
    """

    pixels: Image.Image
    size: tuple[int, int]


ImageInput = np.ndarray | Image.Image | SizedImage


def shrink(image: ImageInput, side: int) -> SizedImage:
    """``image`` squashed to ``side`` x ``side`` RGB exactly as the model's image processor
    squashes it (transparency onto white, then Pillow's bicubic resize), keeping its size: the
    full-size pixels can be dropped at once, and :meth:`Kosmos2Engine.preprocess` gives the
    same ``pixel_values`` for the result as for ``image``."""
    if isinstance(image, SizedImage):
        return image
    size = size_of(image)
    rgb = to_rgb(image)
    return SizedImage(rgb if rgb.size == (side, side) else rgb.resize((side, side), Image.Resampling.BICUBIC), size)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def parallel_map(function: Callable[[Any], Any], items: Sequence) -> list:
    """``[function(item) for item in items]``, spread over a pool of one thread per core when
    there are several items (for work that releases the GIL: image decoding and resizing)."""
    global _POOL
    if len(items) < 2:
        return [function(item) for item in items]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="kosmos2-images")
    return list(_POOL.map(function, items))


def split_evenly(items: list, parts: int) -> list[list]:
    """``items`` in at most ``parts`` consecutive slices of nearly equal size, none empty."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    bounds = [index * size + min(index, extra) for index in range(parts + 1)]
    return [items[bounds[index] : bounds[index + 1]] for index in range(parts)]


def size_of(image: ImageInput) -> tuple[int, int]:
    """(width, height) of an (H, W, C) array, a PIL image, or the original of a :class:`SizedImage`."""
    return (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size


def to_rgb(image: ImageInput) -> Image.Image:
    """An RGB PIL image of an array (H, W[, 1|3|4]) uint8 or a PIL image of any mode, any
    transparency composited onto white, as transformers' ``convert_to_rgb`` does (its blend
    for arrays, Pillow's ``alpha_composite`` for images); a :class:`SizedImage`'s own pixels."""
    if isinstance(image, SizedImage):
        return image.pixels
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[2] == 4:
            alpha = image[..., 3:4] / 255
            image = np.round(alpha * image[..., :3] + (1 - alpha) * 255).astype(np.uint8)
        converted = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[2] == 1 else image)
        return converted if converted.mode == "RGB" else converted.convert("RGB")  # no second full-size copy
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def pixel_values(image_processor: Any, images: Sequence[ImageInput], side: int) -> np.ndarray:
    """float32 ``pixel_values`` (n, 3, side, side) of ``images`` by a checkpoint's image
    processor: each squashed to the square (no crop), transparency composited onto white."""
    return image_processor(
        [to_rgb(image) for image in images],
        return_tensors="np",
        size={"height": side, "width": side},
        do_center_crop=False,
    )["pixel_values"].astype(np.float32)
