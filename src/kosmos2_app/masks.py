"""``masks: true``: every box of a request segmented by SAM 2, as Bitmap labels.

The request's boxes (after its ``classes`` whitelist) go to the engine's
:class:`~kosmos2_engine.segmentation.BoxSegmenter` on the engine thread: one image encoding per
image, all of an image's boxes in one mask-decoder call, the images of a request together. Each
box becomes a Bitmap of its class, cut to the image, tagged with Kosmos-2's ``confidence`` and
SAM 2's own estimate of the mask's quality (``mask_quality``); ``keep_boxes: true`` keeps the
rectangles beside the masks. A class that has masks is declared with any geometry in the meta
(``AnyGeometry``), so that its rectangles and its bitmaps are both valid labels of it. Which
SAM 2 is the model row's choice for the deploy's device (:func:`sam2_of`: Hiera large on GPU,
tiny on CPU), or ``KOSMOS2_SAM2``; it is loaded on the first request that asks for masks, or at
deploy and warmed up there (``KOSMOS2_SAM2_AT_DEPLOY=1``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, status

from kosmos2_engine import BoxSegmenter, CheckpointError, MaskPropagator, SettingsError

from .config import DEFAULT_SAM2, sam2_override
from .http.errors import bad_request

FIELDS = ("masks", "keep_boxes", "propagate_masks")


@dataclass(frozen=True)
class MaskOptions:
    """Whether a request wants masks, whether its rectangles stay beside them, and whether a
    video's masks are carried through the frames its stride skips (by default they are)."""

    masks: bool = False
    keep_boxes: bool = False
    propagate_masks: bool = True

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> MaskOptions:
        """The options of ``settings``; ``SettingsError`` naming the field when one is not a boolean."""
        for name in FIELDS:
            if settings.get(name) is not None and not isinstance(settings[name], bool):
                raise SettingsError(name, f"expected true or false, got {settings[name]!r}")
        given = {name: settings[name] for name in FIELDS if settings.get(name) is not None}
        return cls(**given)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> MaskOptions:
        """The options of request ``settings``; a 400 naming the field when one is not a boolean."""
        try:
            return cls.parse(settings)
        except SettingsError as error:
            raise bad_request(str(error)) from None


def sam2_of(model_info: Mapping[str, Any] | None, device: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The SAM 2 (hub id or folder) of a deploy of ``model_info`` on ``device``:
    ``KOSMOS2_SAM2`` when set; else ``meta.sam2[kind]`` (``kind``: ``cuda`` or ``cpu``) of the
    row, or of the default row (``rows[0]``) when the row names none (a Team Files checkpoint);
    else :data:`~.config.DEFAULT_SAM2`. ``model_info`` comes from the deploy request, so a choice
    must be one that ``rows`` (``models.json``) list: ``ValueError`` naming the field otherwise."""
    override = sam2_override()
    if override:
        return override
    kind = "cuda" if device.startswith("cuda") else "cpu"
    choices = _sam2_choices(model_info)
    if choices is None and rows:
        choices = _sam2_choices(rows[0])
    if choices is None:
        return DEFAULT_SAM2
    if not isinstance(choices, Mapping):
        raise ValueError(f"model_info.meta.sam2 must map 'cuda' and 'cpu' to a SAM 2, got {choices!r}")
    chosen = choices.get(kind)
    if chosen is None:
        return DEFAULT_SAM2
    listed = sorted({value for row in rows for value in (_sam2_choices(row) or {}).values()})
    if not isinstance(chosen, str) or chosen not in listed:
        raise ValueError(f"model_info.meta.sam2.{kind} must be one of {', '.join(listed)}, got {chosen!r}")
    return chosen


def _sam2_choices(row: Any) -> Any:
    meta = row.get("meta") if isinstance(row, Mapping) else None
    return meta.get("sam2") if isinstance(meta, Mapping) else None


def sam2_encoder_of(backend: str) -> str:
    """The OpenVINO format of SAM 2's image encoder for a Kosmos-2 backend: ``int8-act`` for the
    int8-act row, ``fp32`` for the other OpenVINO rows, empty (torch) for PyTorch."""
    if not backend.startswith("openvino-"):
        return ""
    return "int8-act" if backend == "openvino-int8-act" else "fp32"


class LazySegmenter:
    """SAM 2, loaded once on first use (on the engine thread, through ``call``); ``openvino``:
    the OpenVINO format of its image encoder (the OpenVINO rows, CPU; :func:`sam2_encoder_of`),
    empty for torch."""

    def __init__(self, checkpoint: str, openvino: str = "") -> None:
        self.checkpoint = checkpoint
        self.openvino = openvino
        self._segmenter: BoxSegmenter | None = None
        self._propagator: MaskPropagator | None = None
        self._loading = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._segmenter is not None

    def follow(self, call, device: str) -> None:
        """Once loaded, SAM 2 moves where the engine goes (``call`` runs on the engine thread):
        an idle freeze to CPU frees its GPU memory too."""
        if self._segmenter is not None and self._segmenter.device != device:
            call(self._segmenter.to, device)
        if self._propagator is not None and self._propagator.device != device:
            call(self._propagator.to, device)

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
                    self._segmenter = call(BoxSegmenter.load, self.checkpoint, device, self.openvino)
                except CheckpointError as error:
                    raise HTTPException(
                        status.HTTP_503_SERVICE_UNAVAILABLE,
                        detail=f"masks: {error}; set KOSMOS2_SAM2 to a SAM 2 folder",
                    ) from None
            return self._segmenter

    @functools.cached_property
    def video_refusal(self) -> str | None:
        """Why this SAM 2 cannot carry masks through a video's frames (an image-only checkpoint,
        or one that does not load), None when it can; read from its config once, nothing loaded."""
        try:
            MaskPropagator.check(self.checkpoint)
        except CheckpointError as error:
            return str(error)
        return None

    def propagator(self, call, device: str) -> MaskPropagator:
        """SAM 2's video model on ``device``, loaded on first use through ``call`` (the engine
        thread): torch, on every row (the OpenVINO rows' IR is the image encoder's alone)."""
        with self._loading:
            if self._propagator is None:
                self._propagator = call(MaskPropagator.load, self.checkpoint, device)
            return self._propagator
