"""One error shape for every refusal and failure the app answers, and the handlers of errors
raised inside the SDK's own routes.

Every error body is the SDK's: ``{"detail", "message", "success": false}``
(:func:`error_content`), whether a middleware sends it raw (:func:`send_error`) or a route
raises :func:`bad_request` / ``HTTPException`` (:func:`error_response`).

The SDK still decodes images itself on the routes that take Supervisely ids
(``/inference_image_id``, ``/inference_batch_ids``, the project routes): an image it cannot
decode raises ``cv2.error``, ``ImageReadException`` or ``OSError("OpenCV can not open the file
…")``, which become a 400 (too large, when OpenCV's pixel ceiling refused it). A failed call to
the configured Supervisely instance becomes a 502 that says what failed in our words: the
instance's own answer is not passed on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import cv2
import requests
from fastapi import HTTPException, Request, status
from fastapi.responses import JSONResponse
from supervisely.imaging.image import ImageExtensionError, ImageReadException, UnsupportedImageFormat

from supervisely_io.images import BAD_IMAGE_MESSAGE, too_large_message

INTERNAL_ERROR = "Internal server error; the server's log says what failed."


class BodyTooLarge(Exception):
    """The request body grew past the server's cap while a route read it (a 413)."""


def error_content(message: str) -> dict[str, Any]:
    """The SDK's error shape: ``{"detail", "message", "success": false}``."""
    return {"detail": message, "message": message, "success": False}


def error_response(code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error response of status ``code`` in the SDK's shape (with ``headers``, e.g. ``Retry-After``)."""
    return JSONResponse(status_code=code, content=error_content(message), headers=dict(headers or {}))


def bad_request(message: str) -> HTTPException:
    """A 400 saying ``message`` (which names the field and what is allowed)."""
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=message)


async def send_error(send, code: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer an ASGI request with an error of status ``code`` in the SDK's shape."""
    await send_body(send, code, json.dumps(error_content(message)).encode(), {"content-type": "application/json",
                                                                              **(headers or {})})  # fmt: skip


async def send_body(send, code: int, body: bytes, headers: dict[str, str]) -> None:
    """Answer an ASGI request with ``body`` and ``headers`` (content length added)."""
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": raw})
    await send({"type": "http.response.body", "body": body})


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
