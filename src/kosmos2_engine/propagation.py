"""Masks carried through a video: SAM 2's video model (transformers' ``Sam2VideoModel``).

A key frame's masks (what :class:`~.segmentation.BoxSegmenter` made of its boxes) are the
prompts of one object each; :meth:`MaskPropagator.follow` starts a :class:`Propagation` there,
and each :meth:`Propagation.next` frame is segmented from SAM 2's memory of the frames before it
(the keyframe-then-propagate pattern of Grounded-SAM-2). The image encoder runs once per frame,
shared by all of its objects. A propagation streams: it holds its latest frame and the memory SAM
2 reads (the last ``num_maskmem`` frames, and the object pointers of the last
``max_object_pointers_in_encoder``), so a long gap costs no more memory than a short one.

Frames are RGB uint8 (H, W, 3); masks come back as :class:`~.segmentation.BoxMask` (cropped to
what they cover, ``origin`` = (row, column) in the frame), ``quality`` being SAM 2's probability
that the object is in the frame; an object SAM 2 finds gone (object score <= 0) or whose mask
is empty is None on that frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError
from .segmentation import BoxMask, cropped_mask, sam_pixels, square_side


class MaskPropagator:
    """SAM 2's video model on ``device``. ``precision``: the dtype of its layers under autocast;
    None: bf16 on a GPU, float32 elsewhere (as :class:`~.segmentation.BoxSegmenter`)."""

    def __init__(self, model: Any, device: str = "cpu", precision: torch.dtype | None = None) -> None:
        """``model``: a transformers ``Sam2VideoModel``."""
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision
        self.image_size = square_side(model.config.image_size)

    @classmethod
    def load(cls, checkpoint: str, device: str = "cpu") -> MaskPropagator:
        """SAM 2's video model from a folder or a hub id in the local cache: ``CheckpointError``
        when it cannot be loaded, or when the checkpoint is an image-only SAM 2 (no memory
        weights: its ``model_type`` is not ``sam2_video``)."""
        from transformers import Sam2VideoModel

        cls.check(checkpoint)
        return cls(Sam2VideoModel.from_pretrained(checkpoint, local_files_only=True), device)

    @staticmethod
    def check(checkpoint: str) -> None:
        """``CheckpointError`` unless ``checkpoint``'s config (read from a folder or the local
        cache, nothing downloaded) is SAM 2's video model (``model_type`` ``sam2_video``, as the
        released ``facebook/sam2.1-*`` are): an image-only SAM 2 has no memory weights."""
        from transformers import AutoConfig

        where = "folder" if os.path.isdir(checkpoint) else "hub id (not in the local cache)"
        try:
            config = AutoConfig.from_pretrained(checkpoint, local_files_only=True)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"SAM 2 {where} '{checkpoint}' does not load: {error}") from None
        if config.model_type != "sam2_video":
            raise CheckpointError(
                f"SAM 2 '{checkpoint}' is an image model ({config.model_type}), with no video memory to carry masks "
                "through frames"
            )

    def to(self, device: str) -> MaskPropagator:
        """Move the model to ``device`` in place."""
        self.model.to(device)
        self.device = device
        return self

    def follow(self, key_frame: np.ndarray, masks: Sequence[BoxMask]) -> Propagation:
        """A :class:`Propagation` of ``masks`` (one object each, none empty) from ``key_frame``."""
        if not masks or any(mask.area == 0 for mask in masks):
            raise ValueError("every object to follow needs a mask that is not empty")
        return Propagation(self, key_frame, masks)

    def autocast(self) -> torch.autocast:
        """bf16 autocast on a GPU (or :attr:`precision`'s dtype), disabled in float32."""
        device_type = torch.device(self.device).type
        dtype = self.precision or (torch.bfloat16 if device_type == "cuda" else torch.float32)
        return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)


class Propagation:
    """One key frame's objects, followed frame by frame (see the module's docstring)."""

    def __init__(self, propagator: MaskPropagator, key_frame: np.ndarray, masks: Sequence[BoxMask]) -> None:
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        self._propagator = propagator
        self.size: tuple[int, int] = key_frame.shape[:2]
        config = propagator.model.config
        self._kept = max(config.num_maskmem, config.max_object_pointers_in_encoder)  # frames SAM 2 reads back
        self._session = Sam2VideoInferenceSession(
            video_height=self.size[0], video_width=self.size[1], inference_device=propagator.device,
            inference_state_device=propagator.device, video_storage_device=propagator.device, dtype=torch.float32,
        )  # fmt: skip
        key = self._session.add_new_frame(self._pixels(key_frame))
        side = propagator.image_size
        for obj_id, mask in enumerate(masks, 1):
            prompt = _whole(mask, self.size).to(propagator.device)
            prompt = F.interpolate(prompt[None, None], size=(side, side), mode="bilinear", antialias=True)
            self._session.add_mask_inputs(self._session.obj_id_to_idx(obj_id), key, (prompt >= 0.5).float())
        self._session.obj_with_new_inputs = list(range(1, len(masks) + 1))
        with torch.inference_mode(), propagator.autocast():
            propagator.model(self._session, frame_idx=key)  # encodes the key frame's memory
        self._index = key

    @torch.inference_mode()
    def next(self, frame: np.ndarray) -> list[BoxMask | None]:
        """The masks of the next frame (RGB uint8, the key frame's size), one per object in the
        order given, None where SAM 2 finds the object gone."""
        if frame.shape[:2] != self.size:
            raise ValueError(f"frame of {frame.shape[:2]} in a propagation of {self.size} frames")
        with self._propagator.autocast():
            out = self._propagator.model(self._session, frame_idx=self._index + 1, frame=self._pixels(frame))
        self._index = out.frame_idx
        self._forget()
        masks: list[BoxMask | None] = []
        for logits, score in zip(out.pred_masks[:, 0], out.object_score_logits.reshape(-1).float()):
            mask = cropped_mask(logits, self.size, float(torch.sigmoid(score))) if score > 0 else None
            masks.append(mask if mask is not None and mask.area else None)
        return masks

    @property
    def held_frames(self) -> int:
        """How many frames' memory this propagation holds (per object, at most)."""
        outputs = self._session.output_dict_per_obj.values()
        return max((len(o["cond_frame_outputs"]) + len(o["non_cond_frame_outputs"]) for o in outputs), default=0)

    def _pixels(self, frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(sam_pixels(frame, self._propagator.image_size))

    def _forget(self) -> None:
        """Drop the frames before the latest and the memory older than SAM 2 reads back."""
        session = self._session
        frames = session.processed_frames or {}
        for index in [i for i in frames if i < self._index]:
            del frames[index]
        for outputs in session.output_dict_per_obj.values():
            outputs["non_cond_frame_outputs"].pop(self._index - self._kept, None)


def _whole(mask: BoxMask, size: tuple[int, int]) -> torch.Tensor:
    """float32 (H, W) 0/1 of a cropped mask placed in a frame of ``size``."""
    whole = np.zeros(size, np.float32)
    top, left = mask.origin
    height, width = mask.mask.shape
    whole[top : top + height, left : left + width] = mask.mask
    return torch.from_numpy(whole)
