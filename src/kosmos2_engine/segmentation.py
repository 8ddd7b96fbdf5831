"""Masks for boxes: SAM 2 (transformers' ``Sam2Model``) prompted with every box of an image at once.

:class:`BoxSegmenter` runs SAM 2's image encoder once per image (the images of a call in one
pass) and then every box of an image through the prompt encoder and mask decoder in one call,
one mask per box (``multimask_output=False``). Images are resized to SAM 2's square input
(``image_size``, 1024 for the released models) and normalised with ImageNet's mean and
deviation, as SAM 2's own processor does; boxes are pixel ``(x0, y0, x1, y1)`` of the original
image (right and bottom exclusive), scaled to that input. A mask's low-resolution logits are
resized to the original image and thresholded at 0; each comes back cropped to the rows and
columns it covers, with its origin, so that a small box on a large image costs a small array.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import CheckpointError

logger = logging.getLogger(__name__)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class BoxMask:
    """One box's mask: ``mask`` bool (h, w), whose top-left pixel is ``origin`` = (row, column)
    of the image; ``quality`` is SAM 2's own estimate of the mask's IoU, 0..1. An empty mask has
    shape (0, 0)."""

    mask: np.ndarray
    origin: tuple[int, int]
    quality: float

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def sam_pixels(image: np.ndarray, side: int) -> np.ndarray:
    """float32 (3, side, side): RGB uint8 (H, W, 3) resized to SAM 2's square input, normalised."""
    resized = Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR)
    scaled = np.asarray(resized, dtype=np.float32) / 255.0
    return ((scaled - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


def square_side(image_size: int | Sequence[int]) -> int:
    """SAM 2's input side from its config's ``image_size``: an int, or ``[height, width]`` as the
    released configs write it (a ``ValueError`` when it is not square)."""
    if isinstance(image_size, int):
        return image_size
    height, width = (int(side) for side in image_size)
    if height != width:
        raise ValueError(f"SAM 2 input {height} x {width} is not square")
    return height


class BoxSegmenter:
    """SAM 2 on ``device``; :meth:`segment` gives a mask per box.

    ``image_encoder``: what encodes images instead of the model's own encoder, a callable from
    ``pixel_values`` (B, 3, S, S) to ``get_image_embeddings``' list (the OpenVINO rows' CPU IR,
    :class:`~kosmos2_engine.runtime.openvino.sam2.OpenVINOSam2Encoder`); None: the model's.
    ``precision``: the dtype SAM 2's torch layers run in under autocast; None: bf16 on a GPU (as
    SAM 2's own examples run it), float32 elsewhere. Weights stay float32, so after a move to the
    CPU (the idle freeze) it runs float32."""

    def __init__(
        self, model: Any, device: str = "cpu", image_encoder: Any = None, precision: torch.dtype | None = None
    ) -> None:
        """``model``: a transformers ``Sam2Model``."""
        self.model = model.to(device).eval()
        self.device = device
        self.image_size = square_side(model.config.vision_config.backbone_config.image_size)
        self.image_encoder = image_encoder
        self.precision = precision

    @classmethod
    def load(cls, checkpoint: str, device: str = "cpu", openvino: str = "") -> BoxSegmenter:
        """SAM 2 from a folder or a hub id already in the local cache (``CheckpointError`` when
        it cannot be loaded: nothing is downloaded here). ``openvino`` (``fp32`` or
        ``int8-act``): its image encoder runs as OpenVINO IR of that format on CPU, exported
        beside the weights on first use; empty: torch."""
        from transformers import Sam2Model

        try:
            model = Sam2Model.from_pretrained(checkpoint, local_files_only=True)
        except OSError as error:
            where = "folder" if os.path.isdir(checkpoint) else "hub id (not in the local cache)"
            raise CheckpointError(f"SAM 2 {where} '{checkpoint}' does not load: {error}") from None
        if not openvino:
            return cls(model, device)
        from .runtime.openvino.sam2 import OpenVINOSam2Encoder, sam2_encoder_ir, weights_folder

        ir = sam2_encoder_ir(model, weights_folder(checkpoint), openvino)
        return cls(model, device, OpenVINOSam2Encoder(ir))

    def to(self, device: str) -> BoxSegmenter:
        """Move SAM 2 to ``device`` in place (as the engine moves on an idle freeze)."""
        if self.image_encoder is not None and not device.startswith("cpu"):
            raise ValueError(f"SAM 2's OpenVINO image encoder runs on CPU only, not on '{device}'.")
        self.model.to(device)
        self.device = device
        return self

    @torch.no_grad()
    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[BoxMask]]:
        """Per image (RGB uint8 (H, W, 3)), the masks of its boxes (float (N, 4) pixel xyxy), in
        order; on a GPU in bf16 (see :attr:`precision`)."""
        device_type = torch.device(self.device).type
        dtype = self.precision or (torch.bfloat16 if device_type == "cuda" else torch.float32)
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            return self._segment(images, boxes)

    def _segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[BoxMask]]:
        wanted = [index for index, image_boxes in enumerate(boxes) if len(image_boxes)]
        results: list[list[BoxMask]] = [[] for _ in images]
        if not wanted:
            return results
        pixels = torch.from_numpy(np.stack([sam_pixels(images[i], self.image_size) for i in wanted]))
        encode = self.image_encoder or self.model.get_image_embeddings
        embeddings = encode(pixels.to(self.device))
        for position, index in enumerate(wanted):
            own = [level[position : position + 1] for level in embeddings]
            image_boxes = np.asarray(boxes[index], np.float32).reshape(-1, 4)
            results[index] = self._masks(own, images[index].shape[:2], image_boxes)
        return results

    def _masks(self, embeddings: list[torch.Tensor], size: tuple[int, int], boxes: np.ndarray) -> list[BoxMask]:
        """Every box of one image through the prompt encoder and mask decoder in one call."""
        height, width = size
        scale = np.array([self.image_size / width, self.image_size / height] * 2, np.float32)
        prompts = torch.from_numpy(boxes * scale)[None].to(self.device)
        out = self.model(image_embeddings=embeddings, input_boxes=prompts, multimask_output=False)
        logits, qualities = out.pred_masks[0, :, 0], out.iou_scores[0, :, 0].float().clamp(0, 1)
        return [cropped_mask(logits[i], size, float(qualities[i])) for i in range(len(boxes))]


def cropped_mask(logits: torch.Tensor, size: tuple[int, int], quality: float) -> BoxMask:
    """Low-resolution logits (h', w') -> the mask at ``size``, cropped to what it covers."""
    full = F.interpolate(logits[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0] > 0
    rows, columns = torch.nonzero(full.any(1)), torch.nonzero(full.any(0))
    if len(rows) == 0:
        return BoxMask(np.zeros((0, 0), bool), (0, 0), quality)
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1
    return BoxMask(full[top:bottom, left:right].cpu().numpy(), (top, left), quality)
