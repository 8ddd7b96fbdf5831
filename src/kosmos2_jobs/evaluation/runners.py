"""What answers the evaluation's questions: the engine in this process, or a deployed server
called through the SDK's ``Session``. Both send the same images in the same groups with the same
settings, and read boxes the way the server writes them (inclusive pixel ``(top, left, bottom,
right)``, scores to 4 decimals), so both give the same numbers. With ``masks: true`` in the
settings each box also gets SAM 2's mask of it (COCO RLE of the whole image), as the server
makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    """A predicted box named by its phrase, with its confidence."""

    name: str
    box: tuple[int, int, int, int]  # inclusive pixel (top, left, bottom, right)
    score: float
    mask: dict | None = None  # with masks: true, SAM 2's mask of the box (COCO RLE); None when empty


class Runner(Protocol):
    def detections(self, images: list[np.ndarray], settings: dict[str, Any]) -> list[list[Detection]]:
        """Per image (RGB uint8 (H, W, 3)), its boxes under the server's ``settings``."""


class EngineRunner:
    """The engine, loaded here: ``checkpoint`` with ``backend`` on ``device``."""

    def __init__(
        self, checkpoint: str, backend: str = "pytorch", device: str = "cpu", max_batch_size: int = 16, sam2: str = ""
    ):
        from kosmos2_app import load_warm_engine, sam2_checkpoint, sam2_encoder_of

        self.engine = load_warm_engine(checkpoint, backend, device, max_batch_size)
        self.sam2, self.device = sam2 or sam2_checkpoint(), device
        self.sam2_encoder = sam2_encoder_of(backend)  # OpenVINO on an OpenVINO backend, as the server
        self._segmenter = None

    def detections(self, images: list[np.ndarray], settings: dict[str, Any]) -> list[list[Detection]]:
        from supervisely.nn.prediction_dto import PredictionBBox

        from kosmos2_app import DescribedRegion, MaskOptions, boxes_xyxy, result_to_predictions, settings_policy

        results = self.engine.run(images, settings_policy(settings))
        boxes = []
        for image, result in zip(images, results):
            dtos = result_to_predictions(result, image.shape[1], image.shape[0])
            boxes.append([d for d in dtos if isinstance(d, PredictionBBox) and not isinstance(d, DescribedRegion)])
        masks: list[list[dict | None]] = [[None] * len(found) for found in boxes]
        if MaskOptions.parse(settings).masks:
            masks = [
                [_rle(mask, image.shape[:2]) for mask in image_masks]
                for image, image_masks in zip(images, self.segmenter().segment(images, list(map(boxes_xyxy, boxes))))
            ]
        return [
            [Detection(d.class_name, tuple(d.bbox_tlbr), d.score, rle) for d, rle in zip(found, image_masks)]
            for found, image_masks in zip(boxes, masks)
        ]

    def segmenter(self):
        """SAM 2 (``sam2``, else ``KOSMOS2_SAM2``), loaded on first use."""
        if self._segmenter is None:
            from kosmos2_engine import BoxSegmenter

            self._segmenter = BoxSegmenter.load(self.sam2, self.device, self.sam2_encoder)
        return self._segmenter


def _rle(mask, size: tuple[int, int]) -> dict | None:
    """A :class:`~kosmos2_engine.BoxMask` as COCO RLE of the whole image; None when empty."""
    from .coco_metrics import mask_rle

    return mask_rle(mask.mask, mask.origin, size) if mask.area else None


class ServerRunner:
    """A deployed server at ``url``, through the SDK's ``Session`` (``/inference_batch``, one
    request per group, the images as PNG files: lossless, so the server decodes the same pixels).

    Not ``ModelAPI.predict``: with the pinned SDK it returns nothing for numpy input and fails for
    several paths (it passes ``conf`` where it is not accepted). ``Session`` needs an ``Api`` only
    for a task id; with ``session_url`` it never calls it."""

    def __init__(self, url: str):
        import supervisely as sly

        self.api = sly.Api("http://127.0.0.1:9", "unused", ignore_task_id=True)
        self.url = url

    def detections(self, images: list[np.ndarray], settings: dict[str, Any]) -> list[list[Detection]]:
        import tempfile
        from pathlib import Path

        from PIL import Image
        from supervisely.nn.inference import Session

        session = Session(self.api, session_url=self.url, inference_settings=dict(settings))
        with tempfile.TemporaryDirectory(prefix="kosmos2-eval-") as folder:
            paths = [str(Path(folder) / f"{i:04d}.png") for i in range(len(images))]
            for path, image in zip(paths, images):
                Image.fromarray(image).save(path)
            annotations = session.inference_image_paths(paths)
        return [_detections(ann) for ann in annotations]


def _detections(ann) -> list[Detection]:
    """The labels with a ``confidence`` as detections (not described regions). A Bitmap is the
    mask of the rectangle before it (``masks`` with ``keep_boxes``: the server writes each box's
    rectangle, then its mask when it is not empty)."""
    import supervisely as sly

    from .coco_metrics import mask_rle

    found: list[Detection] = []
    for label in ann.labels:
        tag = label.tags.get("confidence")
        if tag is None:
            continue
        if isinstance(label.geometry, sly.Bitmap) and found and _unmasked_box_of(found[-1], label, float(tag.value)):
            origin = (label.geometry.origin.row, label.geometry.origin.col)
            found[-1] = replace(found[-1], mask=mask_rle(label.geometry.data, origin, ann.img_size))
            continue
        box = label.geometry.to_bbox()
        found.append(Detection(label.obj_class.name, (box.top, box.left, box.bottom, box.right), float(tag.value)))
    return found


def _unmasked_box_of(detection: Detection, label, score: float) -> bool:
    """Whether ``label`` (a Bitmap scored ``score``) is the mask of ``detection``, the box before it."""
    return detection.mask is None and detection.name == label.obj_class.name and detection.score == score
