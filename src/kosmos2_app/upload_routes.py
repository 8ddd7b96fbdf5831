"""The SDK's image routes, served by the app: same requests, same answers, nothing on disk.

The SDK's own handlers wrote each upload of ``/inference_batch`` and ``/inference_batch_async``
into its cache under the client's filename (so ``/tmp/x.py`` or ``../../`` names wrote files,
and two clients sending ``image.png`` got each other's answers), and ``/inference_image_url``
fetched any URL with no timeout into a cache path made of the URL. Here:

* uploads are read and decoded in memory (:func:`~.image_decoding.decode_image`), per request;
  no filename is ever used, so results belong to their request by construction;
* ``image_url`` is fetched by :class:`~.image_fetch.ImageFetcher` (public addresses only unless
  allowed, timeouts, size cap), with at most ``concurrency`` fetches in flight: others wait in
  the event loop, holding no thread, so slow URLs cannot starve inference;
* inference then runs through the SDK's own request manager and formatter
  (:func:`~.sdk_internals.infer_images`), so every response keeps the SDK's format;
* routes that would write a client's file under its name (video uploads, ``/smart_cache_files``)
  or that this image model cannot serve are refused with a 400 that says so.

Form fields as the SDK takes them: ``files`` (one for ``/inference_image``), and the state as
JSON in ``state`` or ``settings`` (e.g. ``{"settings": {"max_new_tokens": 32}}``).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from . import sdk_internals as sdk
from .image_decoding import ImageDecodeError, decode_image
from .image_fetch import FetchRefused, ImageFetcher

MAX_FILES = 256
UNSUPPORTED = {
    "/inference_video_async": "this model serves images; videos are not supported",
    "/inference_video_id": "this model serves images; videos are not supported",
    "/inference_video_id_async": "this model serves images; videos are not supported",
    "/tracking_by_detection": "this model serves images; tracking is not supported",
    "/smart_cache_files": "uploads are not cached; send the images to /inference_batch",
}


def bad_request(message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=message)


class ImageRoutes:
    """The SDK's upload and URL routes for ``model``; :meth:`register` puts them in place."""

    def __init__(self, model, fetcher: ImageFetcher):
        self.model = model
        self.fetcher = fetcher
        self._fetch_slots = anyio.Semaphore(fetcher.policy.concurrency)

    def register(self, server) -> None:
        sdk.replace_route(server, "/inference_image", self.inference_image)
        sdk.replace_route(server, "/inference_batch", self.inference_batch)
        sdk.replace_route(server, "/inference_batch_async", self.inference_batch_async)
        sdk.replace_route(server, "/inference_image_url", self.inference_image_url)
        for path, why in UNSUPPORTED.items():
            sdk.replace_route(server, path, _refusing(why))

    async def inference_image(self, request: Request) -> JSONResponse:
        """One uploaded image; the SDK's single result dict."""
        state, images = await self._state_and_images(request, exactly_one=True)
        results = await anyio.to_thread.run_sync(self._infer, images, state)
        return JSONResponse(results[0])

    async def inference_batch(self, request: Request) -> JSONResponse:
        """Uploaded images; the SDK's list of result dicts, in upload order."""
        state, images = await self._state_and_images(request)
        return JSONResponse(await anyio.to_thread.run_sync(self._infer, images, state))

    async def inference_batch_async(self, request: Request) -> JSONResponse:
        """Uploaded images, inferred in the background; poll ``/get_inference_progress`` and
        ``/pop_inference_results`` with the returned ``inference_request_uuid``."""
        state, images = await self._state_and_images(request)
        manager = self.model.inference_requests_manager
        inference_request, _ = manager.schedule_task(sdk.infer_images, self.model, images, state)
        return JSONResponse({"message": "Scheduled inference task.", "inference_request_uuid": inference_request.uuid})

    async def inference_image_url(self, request: Request) -> JSONResponse:
        """``state.image_url`` fetched within the fetch policy, then inferred."""
        state = request.state.state
        self._check_state(state)
        url = state.get("image_url")
        if not isinstance(url, str):
            raise bad_request(f"image_url: expected an http or https URL string, got {type(url).__name__}")
        data = await self._fetch(url)
        image = self._decode(data, "image_url")
        results = await anyio.to_thread.run_sync(self._infer, [image], state)
        return JSONResponse(results[0])

    async def _fetch(self, url: str) -> bytes:
        """The body of ``url``; waits (in the event loop, holding no thread) up to the fetch
        timeout for one of the ``concurrency`` fetch slots, else a 503."""
        acquired = False
        with anyio.move_on_after(self.fetcher.policy.timeout_s):
            await self._fetch_slots.acquire()
            acquired = True
        if not acquired:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"image_url: {self.fetcher.policy.concurrency} fetches are in progress; try again later",
            )
        try:
            return await anyio.to_thread.run_sync(self.fetcher.fetch, url)
        except FetchRefused as error:
            raise HTTPException(error.status, detail=str(error)) from None
        finally:
            self._fetch_slots.release()

    def _infer(self, images: list, state: dict) -> list[dict[str, Any]]:
        """The SDK's inference of ``images`` as one request; its result dicts. Errors raised
        by the model (a 400 for bad settings) are raised here."""
        return self.model.inference_requests_manager.run(sdk.infer_images, self.model, images, state)

    async def _state_and_images(self, request: Request, exactly_one: bool = False):
        """The request's state (an object) and its uploaded images, decoded."""
        form = await request.form(max_files=MAX_FILES, max_fields=16)
        try:
            state = _form_state(form)
            self._check_state(state)
            uploads = form.getlist("files")
            if not uploads or not all(isinstance(u, UploadFile) for u in uploads):
                raise bad_request("files: send the images as multipart files in the field 'files'")
            if exactly_one and len(uploads) != 1:
                raise bad_request(
                    f"files: exactly one file is expected here, got {len(uploads)}; send several to /inference_batch"
                )
            blobs = [await upload.read() for upload in uploads]
        finally:
            await form.close()
        images = await anyio.to_thread.run_sync(self._decode_all, blobs)
        return state, images

    def _decode_all(self, blobs: list[bytes]) -> list:
        many = len(blobs) > 1
        return [self._decode(blob, f"files[{i}]" if many else "files") for i, blob in enumerate(blobs)]

    def _decode(self, data: bytes, field: str):
        try:
            return decode_image(data, self.model.max_image_pixels)
        except ImageDecodeError as error:
            raise bad_request(str(error) if not field.startswith("files[") else f"{field}: {error}") from None

    def _check_state(self, state) -> None:
        if not isinstance(state, dict):
            raise bad_request(
                f'state: expected a JSON object such as {{"settings": {{...}}}}, got {type(state).__name__}'
            )
        if state.get("settings") is not None and not isinstance(state["settings"], dict):
            raise bad_request(
                'settings: expected an object of settings such as {"max_new_tokens": 32}, '
                f"got {type(state['settings']).__name__}"
            )
        batch_size = state.get("batch_size")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise bad_request(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.model.validate_inference_state(state, log_error=False)


def _form_state(form) -> Any:
    """The state in the form's ``state`` field, else its ``settings`` field (as the SDK reads
    them: the ``settings`` field holds the state, ``{"settings": {...}}``), parsed."""
    raw = form.get("state")
    if raw in (None, "", "{}"):
        raw = form.get("settings") or "{}"
    if not isinstance(raw, str):
        raise bad_request("settings: expected the state as JSON text, got a file")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise bad_request(f"settings: not JSON ({error})") from None


def _refusing(why: str):
    async def refuse(request: Request) -> JSONResponse:
        raise bad_request(f"{request.url.path}: {why}.")

    return refuse
