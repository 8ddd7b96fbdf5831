"""Image bytes to RGB arrays, in memory: uploads, ``image_url`` bodies and base64 fields.

Nothing is written to disk and no name a client sent is used. Decoding is OpenCV's, as in the
SDK's own upload route (``sly.image.read_bytes``), so annotations are the same; EXIF
orientation is applied (an image is boxed as it is shown). An image with transparency (RGBA,
grey with alpha, a palette with a transparent entry) is composited onto white, as transformers'
processor does, instead of keeping whatever colour hides under transparent pixels. The pixel
count is read from the header first (Pillow), so a small file that would decode to gigabytes is
refused undecoded.
NRRD, which the SDK also reads, is refused: its header may name a data file on the server.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps

from kosmos2_engine import to_rgb

BAD_IMAGE_MESSAGE = (
    "The image could not be read: the file is empty, truncated, or not in an image format "
    "this server reads (JPEG, PNG, BMP, TIFF, WebP, GIF)."
)


class ImageDecodeError(ValueError):
    """The bytes are not an image this server serves. ``too_large`` when over the pixel limit."""

    def __init__(self, message: str, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


def too_large_message(max_pixels: int) -> str:
    return (
        f"The image has more than {max_pixels} pixels (width x height), the most this server "
        f"decodes; send a smaller image or raise KOSMOS2_MAX_IMAGE_PIXELS."
    )


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) of encoded image ``data``; :class:`ImageDecodeError` when it is not
    a readable image or has more than ``max_pixels`` pixels."""
    if not data or data.startswith(b"NRRD"):
        raise ImageDecodeError(BAD_IMAGE_MESSAGE)
    size, transparent = _header(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageDecodeError(too_large_message(max_pixels), too_large=True)
    if transparent:
        return _composited(data)
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:  # OpenCV's own pixel ceiling, for formats Pillow cannot size
        raise ImageDecodeError(too_large_message(max_pixels), too_large=True) from error
    if decoded is None:
        raise ImageDecodeError(BAD_IMAGE_MESSAGE)
    if decoded.shape[0] * decoded.shape[1] > max_pixels:
        raise ImageDecodeError(too_large_message(max_pixels), too_large=True)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB, dst=decoded)  # in place: no second full-size copy


def header_pixels(data: bytes) -> int | None:
    """Width x height from the image's header, without decoding it; None when Pillow cannot
    read the header (OpenCV may still decode it)."""
    size, _ = _header(data)
    return None if size is None else size[0] * size[1]


def _header(data: bytes) -> tuple[tuple[int, int] | None, bool]:
    """((width, height), has transparency) from the header; (None, False) when Pillow does
    not know the format."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size, "A" in image.getbands() or image.info.get("transparency") is not None
    except Image.DecompressionBombError:  # over twice Pillow's own limit (about 179 Mpx)
        return ((Image.MAX_IMAGE_PIXELS or 0) * 2 + 1, 1), False
    except Exception:  # noqa: BLE001 - any unreadable header: OpenCV decides
        return None, False


def _composited(data: bytes) -> np.ndarray:
    """RGB of an image with transparency, composited onto white (EXIF orientation applied)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(to_rgb(ImageOps.exif_transpose(image)))
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt after the header
        raise ImageDecodeError(BAD_IMAGE_MESSAGE) from error
