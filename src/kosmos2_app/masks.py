"""``masks: true``: every box of a request segmented by SAM 2, as Bitmap labels.

The request's boxes (after its ``classes`` whitelist) go to the engine's
:class:`~kosmos2_engine.segmentation.BoxSegmenter` on the engine thread: one image encoding per
image, all of an image's boxes in one mask-decoder call, the images of a request together. Each
box becomes a Bitmap of its class, cut to the image, tagged with Kosmos-2's ``confidence`` and
SAM 2's own estimate of the mask's quality (``mask_quality``); ``keep_boxes: true`` keeps the
rectangles beside the masks. A class that has masks is declared with any geometry in the meta
(``AnyGeometry``), so that its rectangles and its bitmaps are both valid labels of it. SAM 2
(``KOSMOS2_SAM2``) is loaded on the first request that asks for masks, or at deploy and warmed
up there (``KOSMOS2_SAM2_AT_DEPLOY=1``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, status

from kosmos2_engine import BoxSegmenter, CheckpointError, SettingsError

from .http.errors import bad_request

FIELDS = ("masks", "keep_boxes")


@dataclass(frozen=True)
class MaskOptions:
    """Whether a request wants masks, and whether its rectangles stay beside them."""

    masks: bool = False
    keep_boxes: bool = False

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> MaskOptions:
        """The options of ``settings``; ``SettingsError`` naming the field when one is not a boolean."""
        for name in FIELDS:
            if settings.get(name) is not None and not isinstance(settings[name], bool):
                raise SettingsError(name, f"expected true or false, got {settings[name]!r}")
        return cls(**{name: bool(settings.get(name)) for name in FIELDS})

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> MaskOptions:
        """The options of request ``settings``; a 400 naming the field when one is not a boolean."""
        try:
            return cls.parse(settings)
        except SettingsError as error:
            raise bad_request(str(error)) from None


class LazySegmenter:
    """SAM 2, loaded once on first use (on the engine thread, through ``call``)."""

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint
        self._segmenter: BoxSegmenter | None = None
        self._loading = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._segmenter is not None

    def follow(self, call, device: str) -> None:
        """Once loaded, SAM 2 moves where the engine goes (``call`` runs on the engine thread):
        an idle freeze to CPU frees its GPU memory too."""
        if self._segmenter is not None and self._segmenter.device != device:
            call(self._segmenter.to, device)

    def warm(self, call, device: str) -> None:
        """Load SAM 2 (see :meth:`get`) and segment one box of a small blank image, so that the
        first mask request pays neither the loading nor the first run."""
        segmenter = self.get(call, device)
        call(segmenter.segment, [np.full((64, 64, 3), 127, np.uint8)], [np.array([[8, 8, 56, 56]], np.float32)])

    def get(self, call, device: str) -> BoxSegmenter:
        """The segmenter on ``device``; ``call(function, *args)`` runs on the engine thread. A
        SAM 2 that cannot be loaded is a 503 that names ``KOSMOS2_SAM2``."""
        with self._loading:
            if self._segmenter is None:
                try:
                    self._segmenter = call(BoxSegmenter.load, self.checkpoint, device)
                except CheckpointError as error:
                    raise HTTPException(
                        status.HTTP_503_SERVICE_UNAVAILABLE,
                        detail=f"masks: {error}; set KOSMOS2_SAM2 to a SAM 2 folder",
                    ) from None
            return self._segmenter
