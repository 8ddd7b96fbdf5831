"""The SDK's image routes, served by the app: same requests, same answers, nothing on disk.

The SDK's own handlers wrote each upload of ``/inference_batch`` and ``/inference_batch_async``
into its cache under the client's filename (so ``/tmp/x.py`` or ``../../`` names wrote files,
and two clients sending ``image.png`` got each other's answers), and ``/inference_image_url``
fetched any URL with no timeout into a cache path made of the URL. Here:

* uploads are read and decoded in memory, per request, within the pixel limits and squashed to
  the model's input at once (:mod:`.decoding`); no filename is ever used, so results belong to
  their request by construction;
* ``image_url`` is fetched by :class:`~.url_fetch.ImageFetcher` (public addresses only unless
  allowed, timeouts, size cap), with at most ``concurrency`` fetches in flight: others wait in
  the event loop, holding no thread, so slow URLs cannot starve inference;
* synchronous requests (``/inference_image``, ``/inference_batch``, ``image_url``) enter the
  app's one inference path (:meth:`~kosmos2_app.model.Kosmos2.submit`) without the SDK's
  per-request bookkeeping: the engine awaited without holding a thread, each response built
  once in the SDK's format (:func:`~kosmos2_app.results.predictions.result_json`; a test compares it with the SDK's own
  formatting). The front door calls the two upload routes directly. ``/inference_batch_async``
  runs through the SDK's request manager (its clients poll it), which ends in the same path;
* routes that would write a client's file under its name (``/smart_cache_files``) or that this
  model cannot serve are refused with a 400 that says so (videos: :mod:`.videos`).

Form fields as the SDK takes them: ``files`` (one for ``/inference_image``), and the state as
JSON in ``state`` or ``settings`` (e.g. ``{"settings": {"max_new_tokens": 32}}``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import sdk_seam as sdk
from ..http.bodies import parse_json
from ..http.errors import INTERNAL_ERROR, BodyTooLarge, bad_request, error_response
from ..http.metrics import note_task
from ..masks import MaskOptions
from ..results.predictions import result_json
from .url_fetch import FetchRefused, ImageFetcher

logger = logging.getLogger(__name__)

MAX_FILES = 256
UNSUPPORTED = {
    "/tracking_by_detection": "tracking a video's existing annotations is not supported; run "
    "/inference_video_id_async with a tracker",
    "/smart_cache_files": "uploads are not cached; send the images to /inference_batch",
}


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

    def fast_routes(self) -> dict:
        """The hot routes as ASGI handlers, for the front door to call directly."""
        return {"/inference_image": _asgi(self.inference_image), "/inference_batch": _asgi(self.inference_batch)}

    async def inference_image(self, request: Request) -> JSONResponse:
        """One uploaded image; the SDK's single result dict."""
        state, blobs = await self._state_and_uploads(request, exactly_one=True)
        return JSONResponse((await self._results(request, blobs, state))[0])

    async def inference_batch(self, request: Request) -> JSONResponse:
        """Uploaded images; the SDK's list of result dicts, in upload order."""
        state, blobs = await self._state_and_uploads(request)
        return JSONResponse(await self._results(request, blobs, state))

    async def inference_batch_async(self, request: Request) -> JSONResponse:
        """Uploaded images, inferred in the background through the SDK's request manager;
        poll ``/get_inference_progress`` and ``/pop_inference_results`` with the returned
        ``inference_request_uuid``. Bad settings are a 400 at once."""
        state, blobs = await self._state_and_uploads(request)
        settings = request_settings(state)
        note_task(self.model.policy_for(settings).task)
        images = await anyio.to_thread.run_sync(self._decode_all, blobs, settings)
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
        return JSONResponse((await self._results(request, [data], state, field="image_url"))[0])

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

    async def _results(self, request: Request, blobs: list[bytes], state: dict, field: str = "files"):
        """The SDK's result dicts for the encoded images ``blobs``: decoded, checked and
        preprocessed in one worker thread, the engine awaited without holding a thread, each
        response built once in the SDK's format."""
        settings = request_settings(state)

        def decode_and_submit():
            images = self._decode_all(blobs, settings, field)
            return images, self.model.submit(images, settings)

        images, future = await anyio.to_thread.run_sync(decode_and_submit)
        results = await asyncio.wrap_future(future)
        note_task(results[0].task)
        if MaskOptions.of(settings).masks:  # SAM 2 runs on the engine thread: wait for it in a worker
            annotations = await anyio.to_thread.run_sync(self.model.annotations_of, images, results, settings)
        else:
            annotations = self.model.annotations_of(images, results, settings)
        return [result_json(annotation, result) for annotation, result in zip(annotations, results)]

    async def _state_and_uploads(self, request: Request, exactly_one: bool = False) -> tuple[dict, list[bytes]]:
        """The request's state (an object) and its uploaded files' bytes."""
        form = await request.form(max_files=MAX_FILES, max_fields=16)
        try:
            state = form_state(form)
            self._check_state(state)
            uploads = [upload for upload in form.getlist("files") if isinstance(upload, UploadFile)]
            if not uploads or len(uploads) != len(form.getlist("files")):
                raise bad_request("files: send the images as multipart files in the field 'files'")
            if exactly_one and len(uploads) != 1:
                raise bad_request(
                    f"files: exactly one file is expected here, got {len(uploads)}; send several to /inference_batch"
                )
            blobs = [await upload.read() for upload in uploads]
        finally:
            await form.close()
        return state, blobs

    def _decode_all(self, blobs: list[bytes], settings: dict, field: str = "files") -> list:
        """Every upload decoded within the pixel limits (several at once, one thread per core)."""
        return self.model.image_decoder.decode_all(blobs, self.model.model_input_side(settings), field)

    def _check_state(self, state) -> None:
        check_state(self.model, state)


def check_state(model, state) -> None:
    """A 400 unless the request's ``state`` is an object whose ``settings`` and ``batch_size``
    have the right kinds and that the SDK's own check accepts."""
    if not isinstance(state, dict):
        raise bad_request(f'state: expected a JSON object such as {{"settings": {{...}}}}, got {type(state).__name__}')
    if state.get("settings") is not None and not isinstance(state["settings"], dict):
        raise bad_request(
            'settings: expected an object of settings such as {"max_new_tokens": 32}, '
            f"got {type(state['settings']).__name__}"
        )
    batch_size = state.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise bad_request(f"batch_size: expected a positive integer, got {batch_size!r}")
    model.validate_inference_state(state, log_error=False)


def request_settings(state: dict) -> dict[str, Any]:
    """The settings of a request's state, with its ``rectangle`` (a region of interest) as the
    SDK reads it."""
    settings = dict(state.get("settings") or {})
    if "rectangle" in state:
        settings["rectangle"] = state["rectangle"]
    return settings


def _asgi(endpoint: Callable[[Request], Awaitable[Response]]):
    """``endpoint`` as an ASGI app, answering errors in the SDK's shape (a 500 is logged once)."""

    async def app(scope, receive, send) -> None:
        try:
            response = await endpoint(Request(scope, receive))
        except StarletteHTTPException as error:  # FastAPI's, and Starlette's own (form limits)
            response = error_response(error.status_code, str(error.detail), error.headers)
        except BodyTooLarge as error:
            response = error_response(413, str(error))
        except Exception:
            logger.exception("%s failed", scope["path"])
            response = error_response(500, INTERNAL_ERROR)
        await response(scope, receive, send)

    return app


def form_state(form) -> Any:
    """The state in the form's ``state`` field, else its ``settings`` field (as the SDK reads
    them: the ``settings`` field holds the state, ``{"settings": {...}}``), parsed."""
    raw = form.get("state")
    if raw in (None, "", "{}"):
        raw = form.get("settings") or "{}"
    if not isinstance(raw, str):
        raise bad_request("settings: expected the state as JSON text, got a file")
    try:
        return parse_json(raw, "settings: the form field")
    except ValueError as error:
        raise bad_request(str(error)) from None


def _refusing(why: str):
    async def refuse(request: Request) -> JSONResponse:
        raise bad_request(f"{request.url.path}: {why}.")

    return refuse
