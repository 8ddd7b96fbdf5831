"""The SDK's video routes, served by the app: uploads and Supervisely videos, frames in batches.

* ``/inference_video_async``: one uploaded video (multipart ``files``, state in ``state`` or
  ``settings``), as ``ModelAPI.predict(input="clip.mp4")`` sends it. It is written under a
  random name in the server's private video folder (the SDK wrote it under the client's
  filename in the shared temporary folder), checked (a video, frames within the pixel limit,
  frames asked for within ``KOSMOS2_MAX_VIDEO_FRAMES``) before anything is scheduled, and
  deleted when its request ends.
* ``/inference_video_id`` and ``/inference_video_id_async``: a Supervisely video by id
  (``Session.inference_video_id(_async)``, ``ModelAPI.predict(video_id=...)``, Apply NN to
  Videos). Its info is read and checked at once (a 404 for a video the API refuses); the job
  downloads it (up to ``KOSMOS2_MAX_VIDEO_MB``) into the private folder, then runs.

Bad settings, frame ranges and tracker settings are 400s naming the field, before any work.
With masks and a stride, each key frame's masks are carried through the frames the stride skips
(:mod:`..video.propagation`; ``propagate_masks: false`` keeps to the key frames), and those
frames count towards ``KOSMOS2_MAX_VIDEO_FRAMES``.
The per-frame results are the SDK's result dicts with ``frame_index`` (and the video's ids);
``/pop_inference_results`` hands them over as they finish, ``/get_inference_result`` ends with
``{"video_ann": ...}`` (the tracked video annotation, or null without a tracker).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import anyio
import requests
from fastapi import HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from supervisely.nn.inference.inference_request import InferenceRequest

from ..config import VideoLimits
from ..http.errors import bad_request
from ..http.metrics import note_task
from ..video import VideoFile, VideoRefused, VideoRequest, VideoStore, video_request
from ..video.files import VideoTooLarge, copy_capped
from ..video.job import VideoSource, run_video, tracking_settings
from ..video.tracking import require_tracking, tracker_settings
from .images import check_state, form_state, request_settings

logger = logging.getLogger(__name__)
DOWNLOAD_CHUNK = 1 << 20


@dataclass
class VideoJob:
    """A checked video request, ready to run: ``files`` closes (deletes) its file."""

    request: VideoRequest
    settings: dict[str, Any]
    source: VideoSource
    files: contextlib.ExitStack
    video: VideoFile | None = None  # an upload: read already
    api: Any = None  # a video by id: fetched through this API first
    size: int = 0  # its size as its info says, 0 when unknown


class VideoRoutes:
    """The video routes of ``model`` under ``limits``; :meth:`register` puts them in place."""

    def __init__(self, model, limits: VideoLimits, store: VideoStore | None = None) -> None:
        self.model = model
        self.limits = limits
        self.store = store or VideoStore()
        atexit.register(self.store.close)  # the (by then empty) folder goes with the server

    def register(self, server) -> None:
        from .. import sdk_seam as sdk

        sdk.replace_route(server, "/inference_video_async", self.inference_video_async)
        sdk.replace_route(server, "/inference_video_id", self.inference_video_id)
        sdk.replace_route(server, "/inference_video_id_async", self.inference_video_id_async)

    async def inference_video_async(self, request: Request) -> JSONResponse:
        """One uploaded video, run in the background; poll with the returned request id."""
        form = await request.form(max_files=1, max_fields=8)
        try:
            state = form_state(form)
            check_state(self.model, state)
            uploads = [upload for upload in form.getlist("files") if isinstance(upload, UploadFile)]
            if len(uploads) != 1 or len(form.getlist("files")) != 1:
                raise bad_request("files: send one video as a multipart file in the field 'files'")
            job = await anyio.to_thread.run_sync(self._uploaded, uploads[0].file, state)
        finally:
            await form.close()
        return JSONResponse({"message": "Scheduled inference task.", "inference_request_uuid": self._schedule(job)[0]})

    async def inference_video_id_async(self, request: Request) -> JSONResponse:
        """A Supervisely video by id, run in the background; poll with the returned request id."""
        job = await self._by_id(request)
        return JSONResponse({"message": "Inference has started.", "inference_request_uuid": self._schedule(job)[0]})

    async def inference_video_id(self, request: Request) -> JSONResponse:
        """A Supervisely video by id, waited for: ``{"ann": [per-frame results], "video_ann": ...}``."""
        job = await self._by_id(request)
        _, future, inference_request = self._schedule(job)
        await asyncio.wrap_future(future)
        if inference_request.exception is not None:
            error = inference_request.exception
            if isinstance(error, VideoRefused | HTTPException):
                raise _as_http(error)
            raise error
        return JSONResponse({"ann": inference_request.pop_pending_results(), **(inference_request.final_result or {})})

    def _schedule(self, job: VideoJob):
        manager = self.model.inference_requests_manager
        try:
            inference_request, future = manager.schedule_task(self._run, job)
        except BaseException:
            job.files.close()
            raise
        return inference_request.uuid, future, inference_request

    def _uploaded(self, upload, state: dict[str, Any]) -> VideoJob:
        """An upload copied to a private file and checked, with its request (in a worker thread)."""
        files = contextlib.ExitStack()
        try:
            request, settings = self._checked(state)
            path = files.enter_context(self.store.new_file())
            copy_capped(upload, path, self.limits.max_bytes, "files")
            video = VideoFile.open(path, self.limits.frame_pixels)
            request.frame_indices(video.frames, video.fps, self.limits.max_frames)
            return VideoJob(request, settings, VideoSource(), files, video=video)
        except VideoRefused as error:
            files.close()
            raise _as_http(error) from None
        except BaseException:
            files.close()
            raise

    async def _by_id(self, request: Request) -> VideoJob:
        state = request.state.state
        check_state(self.model, state)
        video_id = state.get("video_id") or state.get("videoId")
        api = self.model.api_from_request(request)
        return await anyio.to_thread.run_sync(self._looked_up, api, video_id, state)

    def _looked_up(self, api, video_id: int, state: dict[str, Any]) -> VideoJob:
        """A video by id: the request checked, the video's info read and checked (in a worker thread)."""
        try:
            request, settings = self._checked(state)
        except VideoRefused as error:
            raise _as_http(error) from None
        if api is None:
            raise bad_request("video_id: this server has no Supervisely instance to read videos from (SERVER_ADDRESS)")
        try:
            info = api.video.get_info_by_id(video_id)
        except requests.HTTPError as error:  # others: a 502 saying how (http/errors.py)
            if error.response is None or error.response.status_code not in (400, 403, 404):
                raise
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"video_id: the Supervisely instance has no video {video_id} that this session may read",
            ) from None
        if info is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"video_id: no video {video_id} on the Supervisely instance"
            )
        size = int((info.file_meta or {}).get("size") or 0)
        try:
            if size > self.limits.max_bytes:
                raise VideoTooLarge(
                    f"video_id: video {video_id} has {size >> 20} MB, more than the {self.limits.max_bytes >> 20} MB "
                    "this server reads (KOSMOS2_MAX_VIDEO_MB)"
                )
            if (info.frame_width or 0) * (info.frame_height or 0) > self.limits.frame_pixels:
                raise VideoRefused(
                    f"video_id: frames of {info.frame_width} x {info.frame_height} have more pixels than the "
                    f"{self.limits.frame_pixels} a frame may have (KOSMOS2_MAX_IMAGE_PIXELS)"
                )
            if info.frames_count:
                request.frame_indices(info.frames_count, _fps(info), self.limits.max_frames)
        except VideoRefused as error:
            raise _as_http(error) from None
        source = VideoSource(info.id, info.dataset_id, info.project_id)
        return VideoJob(request, settings, source, contextlib.ExitStack(), api=api, size=size)

    def _checked(self, state: dict[str, Any]) -> tuple[VideoRequest, dict[str, Any]]:
        """The request's frames and tracking, and its settings (over the defaults, with the classes
        a tracker needs), each checked: ``VideoRefused`` or a 400 naming the field."""
        request = video_request(state)
        settings = tracking_settings(self.model, request_settings(state), request)
        note_task(self.model.policy_for(settings).task)
        if self.model.propagates(settings, request.stride):
            request = dataclasses.replace(request, propagate=True)
        if request.tracker is not None:
            require_tracking()
            tracker_settings(request.tracker_settings, self.limits.reid_weights)
        return request, settings

    def _run(self, job: VideoJob, inference_request) -> None:
        """The job, in the SDK's request executor: download if by id, then the frames."""
        with job.files:
            video = job.video if job.video is not None else self._downloaded(job, inference_request)
            run_video(
                self.model, video, job.request, job.settings, inference_request, job.source,
                self.limits.max_frames, self.limits.reid_weights,
            )  # fmt: skip

    def _downloaded(self, job: VideoJob, inference_request) -> VideoFile:
        path = job.files.enter_context(self.store.new_file())
        inference_request.set_stage(InferenceRequest.Stage.PREPARING, 0, job.size or None)
        response = job.api.post("videos.download", {"id": job.source.video_id}, stream=True)
        with contextlib.closing(response):
            chunks = response.iter_content(DOWNLOAD_CHUNK)
            copy_capped(_counted(chunks, inference_request), path, self.limits.max_bytes, "video_id")
        return VideoFile.open(path, self.limits.frame_pixels, "video_id")


def _counted(chunks, inference_request):
    for chunk in chunks:
        inference_request.done(len(chunk))
        yield chunk


def _fps(info) -> float:
    """Frames per second from a video's info, 0 when it does not say."""
    duration = (info.file_meta or {}).get("duration")
    if not isinstance(duration, int | float) or duration <= 0 or not info.frames_count:
        return 0.0
    return info.frames_count / duration


def _as_http(error: Exception) -> HTTPException:
    if isinstance(error, HTTPException):
        return error
    code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE if isinstance(error, VideoTooLarge) else status.HTTP_400_BAD_REQUEST
    return HTTPException(code, detail=str(error))
