"""Encoded images of one request to what the model gets, within the pixel limits.

1. The pixels of every image are read from its header (nothing decoded yet) and summed: a
   request over ``KOSMOS2_MAX_REQUEST_PIXELS`` is a 413 that says so.
2. Each image is decoded only once the server's :class:`~kosmos2_app.pixel_budget.PixelBudget`
   grants its pixels (a 503 with ``Retry-After`` when it cannot within the wait), in memory,
   once (:func:`supervisely_io.images.decode_image`), and squashed to the model's input at once
   (:func:`kosmos2_engine.shrink`), so that the full-size pixels are dropped before the budget
   is given back. Only a request with a region of interest keeps whole images: the region is
   cut from them (:mod:`kosmos2_app.regions_of_interest`).
"""

from __future__ import annotations

from fastapi import HTTPException, status

from kosmos2_engine import ImageInput, parallel_map, shrink
from supervisely_io.images import ImageDecodeError, decode_image, header_pixels

from ..config import MAX_REQUEST_PIXELS_ENV, PixelLimits
from ..http.errors import bad_request
from ..pixel_budget import BudgetExhausted, PixelBudget


class ImageDecoder:
    """Decodes the images of requests under ``limits``, sharing ``budget`` across the server."""

    def __init__(self, limits: PixelLimits, budget: PixelBudget):
        self.limits = limits
        self.budget = budget

    def decode_all(self, blobs: list[bytes], side: int | None, field: str = "files") -> list[ImageInput]:
        """Each of ``blobs`` decoded: a :class:`~kosmos2_engine.SizedImage` of ``side`` pixels,
        or, when ``side`` is None, the whole RGB uint8 (H, W, 3) array. A 400 names the first bad
        image (``field[i]`` when there are several), a 413 a request over its pixels, a 503 a
        server whose budget stayed full."""
        pixels = [min(header_pixels(data) or self.limits.per_image, self.limits.per_image) for data in blobs]
        if sum(pixels) > self.limits.per_request:
            raise HTTPException(
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                detail=f"{field}: the images have {sum(pixels)} pixels together, more than the "
                f"{self.limits.per_request} one request may have ({MAX_REQUEST_PIXELS_ENV}); send "
                "fewer or smaller images, or raise it on the server",
            )
        names = [f"{field}[{index}]" if len(blobs) > 1 else field for index in range(len(blobs))]
        return parallel_map(lambda item: self._decode(item[0], item[1], item[2], side), list(zip(blobs, pixels, names)))

    def _decode(self, data: bytes, pixels: int, field: str, side: int | None) -> ImageInput:
        try:
            with self.budget.granted(pixels):
                image = decode_image(data, self.limits.per_image)
                return image if side is None else shrink(image, side)
        except ImageDecodeError as error:
            raise bad_request(str(error) if field in ("files", "image_url") else f"{field}: {error}") from None
        except BudgetExhausted as error:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=str(error),
                headers={"Retry-After": str(error.retry_after_s)},
            ) from None
