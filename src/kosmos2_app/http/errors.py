"""Errors raised inside the SDK's own routes, answered deliberately instead of as 500s.

The SDK still decodes images itself on the routes that take Supervisely ids
(``/inference_image_id``, ``/inference_batch_ids``, the project routes): an image it cannot
decode raises ``cv2.error``, ``ImageReadException`` or ``OSError("OpenCV can not open the file
…")``, which become a 400 (too large, when OpenCV's pixel ceiling refused it). A failed call to
the configured Supervisely instance becomes a 502 that says what failed in our words: the
instance's own answer is not passed on.
"""

from __future__ import annotations

import cv2
import requests
from fastapi import Request, status
from fastapi.responses import JSONResponse
from supervisely.imaging.image import ImageExtensionError, ImageReadException, UnsupportedImageFormat

from supervisely_io.images import BAD_IMAGE_MESSAGE, too_large_message


def error_response(code: int, message: str) -> JSONResponse:
    """The SDK's error shape: ``{"detail", "message", "success": false}``."""
    return JSONResponse(status_code=code, content={"detail": message, "message": message, "success": False})


def register_error_handlers(server, max_pixels: int) -> None:
    """Image decoding failures in the SDK's routes: 400; a failed Supervisely call: 502."""

    def bad_image(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, OSError) and not str(error).startswith("OpenCV can not open the file"):
            return error_response(status.HTTP_500_INTERNAL_SERVER_ERROR, "Internal error reading a file.")
        too_large = isinstance(error, cv2.error) and "CV_IO_MAX_IMAGE_PIXELS" in str(error)
        return error_response(
            status.HTTP_400_BAD_REQUEST, too_large_message(max_pixels) if too_large else BAD_IMAGE_MESSAGE
        )

    for error_type in (ImageReadException, UnsupportedImageFormat, ImageExtensionError, cv2.error, OSError):
        server.add_exception_handler(error_type, bad_image)
    server.add_exception_handler(requests.RequestException, supervisely_call_failed)


def supervisely_call_failed(request: Request, error: Exception) -> JSONResponse:
    """A call to the Supervisely instance failed: 502, saying how, without its body."""
    response = getattr(error, "response", None)
    if response is not None:
        how = f"answered HTTP {response.status_code}"
    else:
        how = f"could not be reached ({type(error).__name__})"
    return error_response(status.HTTP_502_BAD_GATEWAY, f"The Supervisely instance (SERVER_ADDRESS) {how}.")
