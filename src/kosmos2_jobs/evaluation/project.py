"""Evaluating phrase grounding on a labelled project: each evaluated class is grounded on every
image by its phrase (the class name, or what ``phrases`` maps it to), all of an image's phrases
in one engine run (one vision pass), with no confidence cut; then :func:`~.coco_metrics.evaluate_boxes`.
With ``masks``, every box is also segmented by SAM 2 (``masks: true``, as the server does) and
measured against the targets' masks by :func:`~.coco_metrics.evaluate_masks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .coco_metrics import BoxMetrics, evaluate_boxes, evaluate_masks
from .ground_truth import GroundTruth, LabelledImage
from .runners import Runner


def phrase_map(classes: list[str], phrases: dict[str, str] | None) -> dict[str, str]:
    """class -> phrase: ``phrases`` where given, else the class name; phrases must be distinct."""
    unknown = sorted(set(phrases or {}) - set(classes))
    if unknown:
        raise ValueError(f"phrases name classes {unknown} that are not evaluated; evaluated: {classes}")
    mapping = {name: (phrases or {}).get(name, name) for name in classes}
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"two classes map to the same phrase: {mapping}")
    return mapping


def require_mask_targets(truth: GroundTruth) -> None:
    """``ValueError`` when ``truth`` (read with masks) has no polygon or bitmap target."""
    if not truth.mask_targets:
        raise ValueError("--masks: the project has no polygon or bitmap target of the evaluated classes")


@dataclass
class ProjectEvaluation:
    """What was evaluated and measured."""

    truth: GroundTruth
    phrases: dict[str, str]
    images: list[LabelledImage] = field(default_factory=list)  # the images that were read
    detections: list[list[tuple[str, tuple[int, int, int, int], float]]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    metrics: BoxMetrics | None = None
    detection_masks: list[list[dict | None]] = field(default_factory=list)  # with masks: per detection, COCO RLE
    mask_metrics: BoxMetrics | None = None  # with masks: pycocotools' segm

    @property
    def measured(self) -> BoxMetrics:
        """The metrics, once :func:`evaluate_project` has measured them."""
        if self.metrics is None:
            raise RuntimeError("the project has not been evaluated yet")
        return self.metrics

    def absent_rate(self, threshold: float) -> dict[str, tuple[int, int]]:
        """Per class: (images without it that got a box of it scored at least ``threshold``,
        images without it)."""
        rates = {}
        for name in self.phrases:
            without = [i for i, image in enumerate(self.images) if all(c != name for c, _ in image.boxes)]
            boxed = sum(any(c == name and s >= threshold for c, _, s in self.detections[i]) for i in without)
            rates[name] = (boxed, len(without))
        return rates


def evaluate_project(
    truth: GroundTruth,
    runner: Runner,
    read_image: Callable[[LabelledImage], np.ndarray],
    phrases: dict[str, str] | None = None,
    batch_size: int = 8,
    progress: Callable[[str], None] = lambda message: None,
    masks: bool = False,
) -> ProjectEvaluation:
    """Ground every evaluated class on every readable image and measure the boxes (and, with
    ``masks``, SAM 2's masks of them: ``truth`` read with its masks)."""
    if masks:
        require_mask_targets(truth)
    mapping = phrase_map(truth.classes, phrases)
    class_of = {phrase: name for name, phrase in mapping.items()}
    settings: dict[str, Any] = {"task": "phrase_grounding", "phrases": list(mapping.values()),
                                "confidence_threshold": 0.0}  # fmt: skip
    if masks:
        settings.update(masks=True, keep_boxes=True)
    evaluation = ProjectEvaluation(truth, mapping, unreadable=list(truth.unreadable))
    for start in range(0, len(truth.images), batch_size):
        batch, pixels = [], []
        for image in truth.images[start : start + batch_size]:
            try:
                pixels.append(read_image(image))
                batch.append(image)
            except Exception as error:  # noqa: BLE001 - counted, never fatal
                evaluation.unreadable.append({"image": image.item.key, "reason": str(error) or type(error).__name__})
        for image, found in zip(batch, runner.detections(pixels, settings) if pixels else []):
            evaluation.images.append(image)
            kept = [d for d in found if d.name in class_of]
            evaluation.detections.append([(class_of[d.name], d.box, d.score) for d in kept])
            evaluation.detection_masks.append([d.mask for d in kept])
        progress(f"evaluated {len(evaluation.images)} of {len(truth.images)} images")
    evaluation.metrics = evaluate_boxes(
        [(image.height, image.width) for image in evaluation.images],
        [list(image.boxes) for image in evaluation.images],
        evaluation.detections,
        truth.classes,
    )
    if masks:
        evaluation.mask_metrics = evaluate_masks(
            [(image.height, image.width) for image in evaluation.images],
            [list(image.boxes) for image in evaluation.images],
            [list(image.masks) for image in evaluation.images],
            evaluation.detections,
            evaluation.detection_masks,
            truth.classes,
        )
    return evaluation
