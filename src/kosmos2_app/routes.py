"""Extra HTTP routes for one-call tasks, beside the SDK's inference routes.

``POST /visual_question_answering``
    state: ``question``, an image (``image_id`` or ``image_base64``), optional ``settings``.
    Returns ``{"answer": str, "annotation": <Supervisely annotation JSON>}``.
``POST /describe_regions``
    state: an image (``image_id`` or ``image_base64``), optional ``regions`` (pixel
    ``[left, top, right, bottom]`` boxes), optional ``settings``. Without ``regions`` the
    existing labels of image ``image_id`` are described: each keeps its geometry and class and
    gains a ``description`` tag. Returns ``{"descriptions": [str], "annotation": ...}``.

Both run through the model's normal inference path, so validation and errors are the same.

:func:`register_image_error_handlers` answers images the SDK cannot decode, or an ``image_url`` it
cannot fetch, with a 400 instead of a 500, on every route.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import cv2
import numpy as np
import requests
import supervisely as sly
from fastapi import HTTPException, Request, status
from fastapi.responses import JSONResponse
from PIL import Image
from supervisely.imaging.image import ImageExtensionError, ImageReadException, UnsupportedImageFormat

from .predictions import DESCRIPTION_TAG, annotation_text


def register_task_routes(model, server) -> None:
    """Add the routes above to ``server`` (the SDK app's FastAPI server) for ``model``."""

    @server.post("/visual_question_answering")
    def visual_question_answering(request: Request) -> dict[str, Any]:
        state = request.state.state
        image = _image_from_state(model, request, state)
        settings = {**_settings_of(state), "task": "vqa", "question": state.get("question")}
        ann = model.inference(image, settings)
        return {"answer": annotation_text(ann).get("answer", ""), "annotation": ann.to_json()}

    @server.post("/describe_regions")
    def describe_regions(request: Request) -> dict[str, Any]:
        state = request.state.state
        image = _image_from_state(model, request, state)
        if state.get("regions") is not None:
            ann = _describe(model, image, state, state["regions"])
            return {"descriptions": annotation_text(ann).get("descriptions", []), "annotation": ann.to_json()}
        if state.get("image_id") is None:
            raise _bad_request("regions: give regions ([left, top, right, bottom] pixel boxes), "
                               "or an image_id whose existing labels are to be described")
        return _describe_existing_labels(model, request, image, state)


BAD_IMAGE_MESSAGE = ("The image could not be read: the file is empty, truncated, or not in an image format "
                     "this server reads (JPEG, PNG, BMP, TIFF, WebP, GIF).")


def too_large_message(max_pixels: int) -> str:
    return (f"The image has more than {max_pixels} pixels (width x height), the most this server "
            f"decodes; send a smaller image or raise KOSMOS2_MAX_IMAGE_PIXELS.")


def register_image_error_handlers(server, max_pixels: int) -> None:
    """Map the SDK's image-decoding failures to HTTP 400 instead of 500, on every route.

    The SDK decodes uploads itself: ``/inference_image`` with OpenCV (an empty or undecodable
    file raises ``cv2.error``), the batch and cached paths with ``sly.image.read`` (which raises
    ``ImageReadException``, or ``OSError("OpenCV can not open the file …")`` for a truncated
    file). No code of this app calls OpenCV, so a ``cv2.error`` during a request comes from
    reading its image; one raised by OpenCV's pixel ceiling (``max_pixels``, read from the
    header before decoding) says the image is too large. Any other ``OSError`` stays a 500.
    """

    def bad_image(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, OSError) and not str(error).startswith("OpenCV can not open the file"):
            return JSONResponse(status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
                                content={"detail": str(error), "message": str(error), "success": False})
        too_large = isinstance(error, cv2.error) and "CV_IO_MAX_IMAGE_PIXELS" in str(error)
        message = too_large_message(max_pixels) if too_large else BAD_IMAGE_MESSAGE
        return JSONResponse(status_code=status.HTTP_400_BAD_REQUEST,
                            content={"detail": message, "message": message, "success": False})

    for error_type in (ImageReadException, UnsupportedImageFormat, ImageExtensionError, cv2.error, OSError):
        server.add_exception_handler(error_type, bad_image)
    server.add_exception_handler(requests.RequestException, _fetch_failed)


def register_body_check(server) -> None:
    """Answer a JSON body that is not UTF-8 JSON with a 400, and pass an empty one (a browser's
    GET with a JSON content type) as no body. Without this the SDK's own middleware, which
    parses every JSON body before any route or exception handler runs, fails on both with a
    500. Registered after the SDK's middleware, so it runs before it."""

    @server.middleware("http")
    async def refuse_undecodable_json(request: Request, call_next):
        if "application/json" in request.headers.get("content-type", ""):
            body = await request.body()
            if not body:  # nothing to parse: hide the content type from the SDK's parser
                request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
                return await call_next(request)
            try:
                json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                message = f"The request body is not UTF-8 JSON: {error}"
                return JSONResponse(status_code=status.HTTP_400_BAD_REQUEST,
                                    content={"detail": message, "message": message, "success": False})
        return await call_next(request)


def _fetch_failed(request: Request, error: Exception) -> JSONResponse:
    """A failed HTTP fetch: of the caller's ``image_url`` (a 400: their input), or of the
    Supervisely instance for an image id (a 502: the server could not reach it)."""
    if request.url.path.endswith("/inference_image_url"):
        code, message = status.HTTP_400_BAD_REQUEST, f"image_url could not be fetched: {error}"
    else:
        code, message = status.HTTP_502_BAD_GATEWAY, f"The Supervisely instance could not be reached: {error}"
    return JSONResponse(status_code=code, content={"detail": message, "message": message, "success": False})


def _describe(model, image: np.ndarray, state: dict, regions) -> sly.Annotation:
    """The annotation of ``regions``: a ``region`` rectangle with a ``description`` tag each."""
    settings = {**_settings_of(state), "task": "region_description", "regions": regions}
    return model.inference(image, settings)


def _describe_existing_labels(model, request: Request, image: np.ndarray, state: dict) -> dict[str, Any]:
    """Describe the bounding box of every label of ``state["image_id"]``; the labels keep
    their geometry and class and gain a ``description`` tag."""
    api = model.api_from_request(request)
    image_id = state["image_id"]
    dataset = api.dataset.get_info_by_id(api.image.get_info_by_id(image_id).dataset_id)
    meta = sly.ProjectMeta.from_json(api.project.get_meta(dataset.project_id))
    if meta.get_tag_meta(DESCRIPTION_TAG) is None:
        meta = meta.add_tag_meta(sly.TagMeta(DESCRIPTION_TAG, sly.TagValueType.ANY_STRING))
    ann = sly.Annotation.from_json(api.annotation.download_json(image_id), meta)
    if not ann.labels:
        return {"descriptions": [], "annotation": ann.to_json()}
    boxes = [label.geometry.to_bbox() for label in ann.labels]
    regions = [[box.left, box.top, box.right, box.bottom] for box in boxes]
    descriptions = annotation_text(_describe(model, image, state, regions)).get("descriptions", [])
    tag_meta = meta.get_tag_meta(DESCRIPTION_TAG)
    labels = [label.add_tag(sly.Tag(tag_meta, text)) for label, text in zip(ann.labels, descriptions)]
    return {"descriptions": descriptions, "annotation": ann.clone(labels=labels).to_json()}


def _image_from_state(model, request: Request, state: dict) -> np.ndarray:
    """RGB uint8 (H, W, 3) image from ``image_id`` (through the Supervisely API) or
    ``image_base64`` (PNG / JPEG bytes)."""
    if state.get("image_base64") is not None:
        try:
            data = base64.b64decode(state["image_base64"], validate=True)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > model.max_image_pixels:
                    raise _bad_request(f"image_base64: {too_large_message(model.max_image_pixels)}")
                return np.asarray(image.convert("RGB"))
        except (binascii.Error, TypeError, ValueError, OSError, Image.DecompressionBombError) as error:
            raise _bad_request(f"image_base64: not a base64-encoded PNG or JPEG ({error})") from error
    if state.get("image_id") is not None:
        if isinstance(state["image_id"], bool) or not isinstance(state["image_id"], int):
            raise _bad_request(f"image_id: expected an integer, got {state['image_id']!r}")
        return model.api_from_request(request).image.download_np(state["image_id"])
    raise _bad_request("give the image as image_id (Supervisely) or image_base64 (PNG or JPEG bytes)")


def _settings_of(state: dict) -> dict:
    settings = state.get("settings") or {}
    if not isinstance(settings, dict):
        raise _bad_request(f"settings: expected an object, got {type(settings).__name__}")
    return settings


def _bad_request(message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=message)
