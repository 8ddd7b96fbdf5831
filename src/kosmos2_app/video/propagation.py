"""Masks through the frames a video request's stride skips: each key frame's masks, followed.

Kosmos-2 runs on every ``stride``-th frame (the key frames); with masks there, each key frame's
Bitmap labels are the prompts of SAM 2's video model (:class:`~kosmos2_engine.MaskPropagator`),
which follows them through the frames up to the next key frame. A followed frame's labels keep
their key label's class, its ``confidence`` and its track id (tracked requests: one object per
track through key and followed frames alike); ``mask_quality`` is SAM 2's probability that the
object is in that frame, and an object SAM 2 finds gone has no label there. Rectangles
(``keep_boxes``, or boxes whose mask came out empty) stay on their key frame. A followed frame's
result says which key frame it came from (``data.propagated_from``) and has no text.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import supervisely as sly

from kosmos2_engine import BoxMask, ImageInput

from ..results.predictions import MASK_QUALITY_TAG
from .frames import FrameSeeker


class GapPropagation:
    """The masks of each key frame of one request, carried through its gap (``gaps``: key frame
    index -> the frames after it, in order; :meth:`~.request.VideoRequest.gaps`)."""

    def __init__(self, model, seeker: FrameSeeker, gaps: dict[int, list[int]]) -> None:
        self.model, self.seeker, self.gaps = model, seeker, gaps

    @property
    def frames(self) -> int:
        """How many frames the gaps hold."""
        return sum(len(gap) for gap in self.gaps.values())

    def after(self, index: int, frame: ImageInput, annotation: sly.Annotation) -> Iterator[tuple[int, sly.Annotation]]:
        """``(frame index, annotation)`` of each frame in key frame ``index``'s gap, in order.
        ``frame``: the key frame, whole (RGB uint8 (H, W, 3): with masks the frames reach the
        model whole); ``annotation``: its annotation, its track ids in ``custom_data`` where the
        request tracks."""
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"masks are carried from a whole RGB frame, got {type(frame).__name__}")
        gap = self.gaps.get(index, [])
        track_ids = annotation.custom_data if isinstance(annotation.custom_data, list) else None
        followed = [
            (label, None if track_ids is None else track_ids[position])
            for position, label in enumerate(annotation.labels)
            if isinstance(label.geometry, sly.Bitmap)
        ]
        if not gap:
            return
        empty: list | dict = [] if track_ids is not None else {}
        if not followed:
            for gap_index in gap:
                yield gap_index, annotation.clone(labels=[], img_tags=[], custom_data=empty)
            return
        propagation, call = self.model.follow_masks(frame, [_box_mask(label.geometry) for label, _ in followed])
        for gap_index, gap_frame in self.seeker.frames(gap):
            masks = call(propagation.next, gap_frame)
            kept = [(label, track_id, mask) for (label, track_id), mask in zip(followed, masks) if mask is not None]
            labels = [_followed_label(label, mask) for label, _, mask in kept]
            custom = [track_id for _, track_id, _ in kept] if track_ids is not None else {}
            yield gap_index, annotation.clone(labels=labels, img_tags=[], custom_data=custom)


def _box_mask(bitmap: sly.Bitmap) -> BoxMask:
    """A Bitmap as the engine's cropped mask (``origin``: its top-left (row, column))."""
    return BoxMask(bitmap.data, (bitmap.origin.row, bitmap.origin.col), 1.0)


def _followed_label(label: sly.Label, mask: BoxMask) -> sly.Label:
    """``label`` (a key frame's Bitmap) on a followed frame: ``mask`` there, its ``mask_quality``
    SAM 2's probability that the object is in the frame, its other tags kept."""
    tags = [tag.clone(value=round(mask.quality, 4)) if tag.meta.name == MASK_QUALITY_TAG else tag for tag in label.tags]
    return label.clone(geometry=sly.Bitmap(mask.mask, origin=sly.PointLocation(*mask.origin)), tags=tags)
