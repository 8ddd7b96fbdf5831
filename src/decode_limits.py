"""The largest image the app decodes, and OpenCV told so before it loads.

``KOSMOS2_MAX_IMAGE_PIXELS`` (default 100 000 000, at most OpenCV's own ceiling of 2**30) is the
most pixels (width x height) an uploaded image may have. A small compressed file can decode to
gigabytes (a decompression bomb), and Kosmos-2 sees 224 x 224 anyway. The SDK decodes uploads
with OpenCV, which reads its ceiling ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when ``cv2`` is
loaded: the entry point (``src/main.py``) calls :func:`limit_opencv_decoding` before anything
imports it, so this module imports nothing but ``os``.
"""

from __future__ import annotations

import os

MAX_IMAGE_PIXELS_ENV = "KOSMOS2_MAX_IMAGE_PIXELS"
OPENCV_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_CEILING = 2**30


def max_image_pixels() -> int:
    """``KOSMOS2_MAX_IMAGE_PIXELS``, checked; ``ValueError`` naming it when malformed."""
    return integer_from_environment(MAX_IMAGE_PIXELS_ENV, 100_000_000, 1, OPENCV_CEILING)


def limit_opencv_decoding() -> int:
    """Set OpenCV's pixel ceiling to :func:`max_image_pixels`; call before ``import cv2``.
    Returns the limit."""
    limit = max_image_pixels()
    os.environ[OPENCV_PIXELS_ENV] = str(limit)
    return limit


def integer_from_environment(name: str, default: int, low: int, high: int) -> int:
    """Integer environment variable ``name`` in [``low``, ``high``], ``default`` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got '{raw}'") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value}")
    return value
