"""Which frames a video request asks for, and whether it tracks: read from its state once.

The state's names are those the SDK's clients send, each with the SDK's aliases:

=====================================================  ===========================================
``start_frame`` / ``startFrameIndex`` / ``start_frame_index``  first frame (0-based), default 0
``num_frames`` / ``framesCount`` / ``frames_count``     how many frames from the start (before the
                                                        stride), default: to the end of the video
``end_frame`` / ``endFrameIndex`` / ``end_frame_index``  the last frame, included (instead of a count)
``duration``                                            seconds from the start (instead of a count)
``stride`` / ``step``                                   run on every n-th frame, default 1
``direction`` / ``framesDirection``                     ``forward`` (default) or ``backward``
``tracker``                                             ``botsort`` or null
``tracker_settings``                                    BoT-SORT's tuning (see :mod:`.tracking`)
=====================================================  ===========================================

Frames past either end of the video are not asked for: a range that runs over is cut at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .files import VideoRefused

START = ("start_frame", "startFrameIndex", "start_frame_index")
COUNT = ("num_frames", "framesCount", "frames_count")
END = ("end_frame", "endFrameIndex", "end_frame_index")
STRIDE = ("stride", "step")
DIRECTION = ("direction", "framesDirection")
TRACKERS = ("botsort",)


@dataclass(frozen=True)
class VideoRequest:
    """A video request's frames and tracking, checked.

    Attributes:
        start: first frame, 0-based.
        count: frames from ``start`` (before the stride), None for "to the end".
        end: last frame, included, None when not given.
        duration_s: seconds from ``start``, None when not given.
        stride: every n-th frame from ``start``.
        backward: frames run from ``start`` towards frame 0.
        tracker: ``"botsort"`` or None.
        tracker_settings: the request's BoT-SORT tuning (checked by :mod:`.tracking`).
        propagate: masks are carried through the frames the stride skips (:meth:`gaps`), which
            then count towards the frame limit too.
    """

    start: int = 0
    count: int | None = None
    end: int | None = None
    duration_s: float | None = None
    stride: int = 1
    backward: bool = False
    tracker: str | None = None
    tracker_settings: dict[str, Any] = field(default_factory=dict)
    propagate: bool = False

    def frame_indices(self, frames_in_video: int, fps: float, max_frames: int) -> list[int]:
        """The frames to run on, in order; ``VideoRefused`` naming the field when the start is
        outside the video or the frames are more than ``max_frames`` (counting the frames masks
        are propagated through, where they are)."""
        covered = self._covered(frames_in_video, fps)
        indices = covered[:: self.stride]
        if len(indices) > max_frames:
            raise VideoRefused(
                f"num_frames: this request runs on {len(indices)} frames, more than the {max_frames} one request "
                "may run on (KOSMOS2_MAX_VIDEO_FRAMES); ask for fewer frames or a larger stride"
            )
        if self.propagate and len(covered) > max_frames:
            raise VideoRefused(
                f"propagate_masks: carrying masks through the frames between every {self.stride}th covers "
                f"{len(covered)} frames, more than the {max_frames} one request may "
                "cover (KOSMOS2_MAX_VIDEO_FRAMES); ask for fewer frames, or send propagate_masks: false"
            )
        return list(indices)

    def gaps(self, frames_in_video: int, fps: float) -> dict[int, list[int]]:
        """For each frame run on, the frames after it (in the request's direction) that the
        stride skips, up to the next frame run on or the end of the range, in order."""
        covered = self._covered(frames_in_video, fps)
        return {covered[at]: list(covered[at + 1 : at + self.stride]) for at in range(0, len(covered), self.stride)}

    def _covered(self, frames_in_video: int, fps: float) -> range:
        """Every frame of the range asked for, in order, before the stride; ``VideoRefused``
        naming ``start_frame`` when the start is outside the video."""
        if not 0 <= self.start < frames_in_video:
            raise VideoRefused(
                f"start_frame: {self.start} is outside the video, which has frames 0 to {frames_in_video - 1}"
            )
        span = self._span(fps)
        if self.backward:
            last = self.start - span + 1 if span is not None else 0
            return range(self.start, max(last, 0) - 1, -1)
        last = self.start + span - 1 if span is not None else frames_in_video - 1
        return range(self.start, min(last, frames_in_video - 1) + 1)

    def _span(self, fps: float) -> int | None:
        """Frames from the start (before the stride) that were asked for, None for all."""
        if self.count is not None:
            return self.count
        if self.end is not None:
            return abs(self.end - self.start) + 1
        if self.duration_s is not None:
            if not fps > 0:
                raise VideoRefused("duration: the video does not say its frame rate; send num_frames instead")
            return max(1, math.floor(self.duration_s * fps))
        return None


def video_request(state: dict[str, Any]) -> VideoRequest:
    """The :class:`VideoRequest` of a request's ``state``; ``VideoRefused`` naming the field."""
    start = _integer(state, START, low=0)
    count = _integer(state, COUNT, low=1)
    end = _integer(state, END, low=0)
    stride = _integer(state, STRIDE, low=1)
    duration = state.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0):
        raise VideoRefused(f"duration: expected a positive number of seconds, got {duration!r}")
    direction = _first(state, DIRECTION)
    if direction is not None and direction not in ("forward", "backward"):
        raise VideoRefused(f"direction: expected 'forward' or 'backward', got {direction!r}")
    tracker = state.get("tracker")
    if tracker is not None and tracker not in TRACKERS:
        raise VideoRefused(f"tracker: expected one of {list(TRACKERS)} or null, got {tracker!r}")
    settings = state.get("tracker_settings")
    if settings is not None and not isinstance(settings, dict):
        raise VideoRefused(f"tracker_settings: expected an object, got {type(settings).__name__}")
    given = [
        name for name, value in (("num_frames", count), ("end_frame", end), ("duration", duration)) if value is not None
    ]
    if len(given) > 1:
        raise VideoRefused(f"{given[1]}: send one of num_frames, end_frame and duration, got {', '.join(given)}")
    return VideoRequest(
        start=start or 0,
        count=count,
        end=end,
        duration_s=None if duration is None else float(duration),
        stride=stride or 1,
        backward=direction == "backward",
        tracker=tracker,
        tracker_settings=dict(settings or {}),
    )


def _first(state: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The value of the first of ``names`` that ``state`` has and is not null."""
    return next((state[name] for name in names if state.get(name) is not None), None)


def _integer(state: dict[str, Any], names: tuple[str, ...], low: int) -> int | None:
    value = _first(state, names)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        name = next(name for name in names if state.get(name) is not None)
        raise VideoRefused(f"{name}: expected an integer of at least {low}, got {value!r}")
    return value
