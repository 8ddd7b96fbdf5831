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

"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import supervisely as sly
from fastapi import Request

from kosmos2_engine import ImageInput, TaskResult

from ..http.errors import bad_request
from ..results.predictions import DESCRIPTION_TAG


def register_task_routes(model, server) -> None:
    """Add the routes above to ``server`` (the SDK app's FastAPI server) for ``model``."""

    @server.post("/visual_question_answering")
    def visual_question_answering(request: Request) -> dict[str, Any]:
        state = request.state.state
        image = _image_from_state(model, request, state)
        settings = {**_settings_of(state), "task": "vqa", "question": state.get("question")}
        ann, result = _infer(model, image, settings)
        return {"answer": result.text, "annotation": ann.to_json()}

    @server.post("/describe_regions")
    def describe_regions(request: Request) -> dict[str, Any]:
        state = request.state.state
        image = _image_from_state(model, request, state)
        if state.get("regions") is not None:
            ann, result = _describe(model, image, state, state["regions"])
            return {"descriptions": list(result.descriptions), "annotation": ann.to_json()}
        if state.get("image_id") is None:
            raise bad_request(
                "regions: give regions ([left, top, right, bottom] pixel boxes), "
                "or an image_id whose existing labels are to be described"
            )
        return _describe_existing_labels(model, request, image, state)


def _infer(model, image: ImageInput, settings: dict) -> tuple[sly.Annotation, TaskResult]:
    """The annotation of one image and the engine's result it was made from."""
    [(annotation, result)] = model.infer([image], settings)
    return annotation, result


def _describe(model, image: ImageInput, state: dict, regions) -> tuple[sly.Annotation, TaskResult]:
    """A ``region`` rectangle with a ``description`` tag per region, and the result."""
    return _infer(model, image, {**_settings_of(state), "task": "region_description", "regions": regions})


def _describe_existing_labels(model, request: Request, image: ImageInput, state: dict) -> dict[str, Any]:
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
    descriptions = list(_describe(model, image, state, regions)[1].descriptions)
    tag_meta = meta.get_tag_meta(DESCRIPTION_TAG)
    labels = [label.add_tag(sly.Tag(tag_meta, text)) for label, text in zip(ann.labels, descriptions)]
    return {"descriptions": descriptions, "annotation": ann.clone(labels=labels).to_json()}


def _image_from_state(model, request: Request, state: dict) -> ImageInput:
    """The image of ``image_id`` (through the Supervisely API: an RGB uint8 (H, W, 3) array) or
    ``image_base64`` (encoded image bytes, decoded in memory as uploads are, within the pixel
    limits: :mod:`.decoding`)."""
    if state.get("image_base64") is not None:
        try:
            data = base64.b64decode(state["image_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as error:
            raise bad_request(f"image_base64: not base64 ({error})") from error
        [image] = model.image_decoder.decode_all([data], model.model_input_side(_settings_of(state)), "image_base64")
        return image
    if state.get("image_id") is not None:
        if isinstance(state["image_id"], bool) or not isinstance(state["image_id"], int):
            raise bad_request(f"image_id: expected an integer, got {state['image_id']!r}")
        return model.api_from_request(request).image.download_np(state["image_id"])
    raise bad_request(
        "image_id or image_base64: required, the image as a Supervisely image id or PNG or JPEG bytes in base64"
    )


def _settings_of(state: dict) -> dict:
    settings = state.get("settings") or {}
    if not isinstance(settings, dict):
        raise bad_request(f"settings: expected an object, got {type(settings).__name__}")
    return settings
