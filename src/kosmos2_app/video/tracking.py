"""Objects tracked across a video's frames: the SDK's BoT-SORT over each frame's boxes.

Kosmos-2's confidence of a box is how sure it is of the box's location bins, not whether the
object is there: every box a request keeps (after its ``confidence_threshold``) is a detection
to the tracker, so BoT-SORT's score thresholds default to 0 here (its own defaults, 0.6 and
0.7, would drop most of Kosmos-2's boxes), and boxes are matched to tracks by overlap alone
(BoT-SORT weighs the overlap by the score unless ``mot20`` is set: with Kosmos-2's scores no
box would ever match its track). Tracks follow boxes by their motion alone: camera-motion
compensation is off (see :data:`DEFAULTS`), so whole frames reach the tracker only for
re-identification. A request may tune the tracker within
:data:`TUNABLE`; re-identification (OSNet) runs only with weights the operator provides
(``KOSMOS2_REID_WEIGHTS``): nothing is downloaded, and no request names a file.

Tracks are matched by class, so class names must be the same from frame to frame: a tracking
request finds classes (``classes``, else the declared ones) by phrase grounding.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import supervisely as sly

from .. import sdk_seam as sdk
from .files import VideoRefused

# BoT-SORT's needs beyond the SDK (``supervisely[tracking]``, trimmed to what BoT-SORT imports).
TRACKING_MODULES = ("lap", "cython_bbox", "scipy", "motmetrics")


def _unit(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


TUNABLE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "track_high_thresh": (_unit, "a number from 0 to 1"),
    "track_low_thresh": (_unit, "a number from 0 to 1"),
    "new_track_thresh": (_unit, "a number from 0 to 1"),
    "match_thresh": (_unit, "a number from 0 to 1"),
    "proximity_thresh": (_unit, "a number from 0 to 1"),
    "appearance_thresh": (_unit, "a number from 0 to 1"),
    "track_buffer": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000, "1 to 1000 frames"),
    "min_box_area": (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0, "a number >= 0"),
    "fuse_score": (lambda v: isinstance(v, bool), "true or false"),
    "fps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 240, "1 to 240"),
}
# ``mot20``: match by overlap alone (otherwise BoT-SORT multiplies the overlap by the score).
# ``cmc_method``: no camera-motion compensation (the SDK's sparse optical flow raises on a frame
# with no corners, a blank or faded frame, which would end the request; "file" reads files).
DEFAULTS = {
    "track_high_thresh": 0.0,
    "track_low_thresh": 0.0,
    "new_track_thresh": 0.0,
    "mot20": True,
    "cmc_method": "none",
}


def default_settings() -> dict[str, Any]:
    """What a request may tune, at the values a tracker here starts from (BoT-SORT's defaults,
    read from the SDK's file without importing the tracker, with ours over them)."""
    import yaml

    path = Path(sly.__file__).parent / "nn" / "tracker" / "botsort" / "botsort_config.yaml"
    defaults = yaml.safe_load(path.read_text()) if path.exists() else {}
    return {name: value for name, value in {**defaults, **DEFAULTS}.items() if name in TUNABLE}


def tracking_available() -> bool:
    """Whether BoT-SORT's libraries are installed (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in TRACKING_MODULES)


def require_tracking() -> None:
    """``VideoRefused`` naming ``tracker`` where BoT-SORT's libraries are not installed."""
    if not tracking_available():
        raise VideoRefused(
            f"tracker: this server has no tracking libraries ({', '.join(TRACKING_MODULES)}; see requirements.txt)"
        )


def tracker_settings(requested: dict[str, Any], reid_weights: str | None) -> dict[str, Any]:
    """BoT-SORT's settings: ours over its defaults, then the request's tuning, each checked;
    ``VideoRefused`` naming ``tracker_settings.<name>`` and what is allowed."""
    for name, value in requested.items():
        if name not in TUNABLE:
            raise VideoRefused(
                f"tracker_settings.{name}: not a setting a request may change; allowed: {sorted(TUNABLE)}"
            )
        accepts, allowed = TUNABLE[name]
        if not accepts(value):
            raise VideoRefused(f"tracker_settings.{name}: expected {allowed}, got {value!r}")
    reid = {"with_reid": reid_weights is not None, "reid_weights": reid_weights, "fp16": False}
    return {**DEFAULTS, **requested, **reid}


@dataclass
class TrackedFrame:
    """One processed frame: its index, its tracked labels with their track ids, its image tags."""

    index: int
    labels: list[sly.Label]
    track_ids: list[int]
    tags: list[sly.Tag]


class FrameTracker:
    """BoT-SORT over one request's frames, in the order they are processed; builds the video
    annotation (one object per track) at the end."""

    def __init__(self, requested: dict[str, Any], reid_weights: str | None, device: str = "cpu") -> None:
        self.needs_frames = reid_weights is not None  # re-identification crops the whole frames
        require_tracking()
        self.track_count = 0  # this tracker's own track numbering (see sdk_seam.own_track_count)
        self._tracker = sdk.new_botsort(tracker_settings(requested, reid_weights), device, self)
        self.frames: list[TrackedFrame] = []
        self.frame_size: tuple[int, int] | None = None

    def update(self, index: int, frame: np.ndarray | None, annotation: sly.Annotation) -> sly.Annotation:
        """``annotation`` of frame ``index`` cut to its tracked labels, their track ids in
        ``custom_data`` (as the SDK's clients read them). ``frame``: the whole RGB frame where
        :attr:`needs_frames`, else None."""
        if frame is None:
            frame = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (*annotation.img_size, 3))  # no memory
        with sdk.own_track_count(self):
            matches = self._tracker.update(frame, annotation)
        labels = [match["label"] for match in matches]
        track_ids = [int(match["track_id"]) for match in matches]
        self.frame_size = annotation.img_size
        self.frames.append(TrackedFrame(index, labels, track_ids, list(annotation.img_tags)))
        return annotation.clone(labels=labels, custom_data=track_ids)

    def add_followed(self, index: int, annotation: sly.Annotation) -> None:
        """A frame whose masks were carried from a key frame (:mod:`.propagation`): its labels
        join the tracks of their key labels (track ids in ``custom_data``), BoT-SORT untouched."""
        self.frames.append(TrackedFrame(index, list(annotation.labels), list(annotation.custom_data), []))

    def video_annotation(self, frames_count: int, size: tuple[int, int]) -> sly.VideoAnnotation:
        """The video annotation of the frames processed: an object per track (its class that of
        its first box), a figure per box, and each frame's text (caption, answer) as a tag of
        that frame alone."""
        objects: dict[int, sly.VideoObject] = {}
        frames, tags = [], []
        for frame in sorted(self.frames, key=lambda f: f.index):
            figures = []
            for label, track_id in zip(frame.labels, frame.track_ids):
                video_object = objects.setdefault(track_id, sly.VideoObject(label.obj_class))
                figures.append(sly.VideoFigure(video_object, label.geometry, frame.index))
            frames.append(sly.Frame(frame.index, figures))
            tags += [sly.VideoTag(tag.meta, tag.value, frame_range=[frame.index, frame.index]) for tag in frame.tags]
        return sly.VideoAnnotation(
            img_size=size,
            frames_count=frames_count,
            objects=sly.VideoObjectCollection(list(objects.values())),
            frames=sly.FrameCollection(frames),
            tags=sly.VideoTagCollection(tags),
        )
