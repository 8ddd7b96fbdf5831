"""One video request: frames read ahead, run through the app's one inference path in batches,
tracked, and handed to the SDK's request object as they finish.

The frames of a batch go to :meth:`~kosmos2_app.model.Kosmos2.submit` together (one vision pass
per frame, their prompts sharing decode runs), with one more batch queued behind it, so the
batcher always has the next batch waiting (and shares runs with other requests, as for images)
while the reader decodes the one after. A stop (``/stop_inference``) ends the request after the
batches in flight: every result handed over so far stays, and the video annotation holds the
frames processed.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from supervisely.nn.inference.inference_request import InferenceRequest

from ..ontology import requested_classes
from ..results.predictions import result_json
from .files import VideoFile, VideoRefused
from .frames import FrameBatch, FrameReader, FrameSeeker
from .propagation import GapPropagation
from .request import VideoRequest
from .tracking import FrameTracker

logger = logging.getLogger(__name__)
IN_FLIGHT = 2  # batches queued on the engine at once


@dataclass(frozen=True)
class VideoSource:
    """Where a video came from, as each frame's result names it (all None for an upload)."""

    video_id: int | None = None
    dataset_id: int | None = None
    project_id: int | None = None


def tracking_settings(model, settings: dict[str, Any], request: VideoRequest) -> dict[str, Any]:
    """``settings`` of a request that tracks: without ``classes``, a caption request finds the
    declared classes; tracks need a class name that stays the same from frame to frame, so any
    task but phrase grounding is refused. Unchanged when the request does not track."""
    if request.tracker is None:
        return settings
    if requested_classes(settings) is None and settings.get("task") in (None, "caption"):
        settings = {**settings, "classes": list(model.ontology.names)}
    if model.policy_for(settings).task != "phrase_grounding":
        raise VideoRefused(
            "tracker: tracks need class names that stay the same from frame to frame; send classes "
            "(or task phrase_grounding with phrases), or no tracker"
        )
    return settings


def run_video(
    model,
    video: VideoFile,
    request: VideoRequest,
    settings: dict[str, Any],
    inference_request,
    source: VideoSource,
    max_frames: int,
    reid_weights: str | None,
) -> None:
    """Run ``model`` on the frames ``request`` asks for; each batch's results (the SDK's result
    dicts, ``frame_index`` set) are added to ``inference_request`` as they finish, each key
    frame's followed by those of the frames its masks were carried through where
    ``request.propagate`` (:mod:`.propagation`); its ``final_result`` is ``{"video_ann": ...}``:
    the video annotation's JSON when the request tracks, else None. ``settings`` must have
    passed :func:`tracking_settings`."""
    indices = request.frame_indices(video.frames, video.fps, max_frames)
    batch = model.video_batch_size()
    batches = [indices[start : start + batch] for start in range(0, len(indices), batch)]
    tracker = FrameTracker(request.tracker_settings, reid_weights) if request.tracker else None
    stack = contextlib.ExitStack()
    seeker = stack.enter_context(FrameSeeker(str(video.path))) if request.propagate else None
    gaps = GapPropagation(model, seeker, request.gaps(video.frames, video.fps)) if seeker else None
    inference_request.set_stage(InferenceRequest.Stage.INFERENCE, 0, len(indices) + (gaps.frames if gaps else 0))
    in_flight: deque = deque()

    def finish(frames: FrameBatch, future) -> None:
        results = future.result()
        annotations = model.annotations_of(frames.views, results, settings)
        for position, (index, annotation, result) in enumerate(zip(frames.indices, annotations, results)):
            if tracker is not None:
                annotation = tracker.update(index, frames.whole[position] if frames.whole else None, annotation)
            hand_over(result_json(annotation, result, frame_index=index, video=source))
            if gaps is None:
                continue
            for gap_index, followed in gaps.after(index, frames.views[position], annotation):
                if inference_request.is_stopped():
                    break
                if tracker is not None:
                    tracker.add_followed(gap_index, followed)
                hand_over(result_json(followed, result, gap_index, source, propagated_from=index))

    def hand_over(answer: dict[str, Any]) -> None:
        inference_request.add_results([answer])
        inference_request.done(1)

    side = model.model_input_side(settings)
    keep_whole = tracker is not None and tracker.needs_frames
    with stack, FrameReader(str(video.path), batches, side, keep_whole) as reader:
        for frames in reader:
            if inference_request.is_stopped():
                break
            in_flight.append((frames, model.submit(frames.views, settings)))
            if len(in_flight) >= IN_FLIGHT:
                finish(*in_flight.popleft())
        while in_flight:
            finish(*in_flight.popleft())
    if reader.short:
        logger.info("The video ended before frame %d (its container said %d frames).", indices[-1], video.frames)
    video_ann = None if tracker is None else tracker.video_annotation(video.frames, (video.height, video.width))
    inference_request.final_result = {"video_ann": None if video_ann is None else video_ann.to_json()}
