"""What answers the evaluation's questions: the engine in this process, or a deployed server
called through the SDK's ``Session``. Both send the same images in the same groups with the same
settings, and read boxes the way the server writes them (inclusive pixel ``(top, left, bottom,
right)``, scores to 4 decimals), so both give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    """A predicted box named by its phrase, with its confidence."""

    name: str
    box: tuple[int, int, int, int]  # inclusive pixel (top, left, bottom, right)
    score: float


class Runner(Protocol):
    def detections(self, images: list[np.ndarray], settings: dict[str, Any]) -> list[list[Detection]]:
        """Per image (RGB uint8 (H, W, 3)), its boxes under the server's ``settings``."""


class EngineRunner:
    """The engine, loaded here: ``checkpoint`` with ``backend`` on ``device``."""

    def __init__(self, checkpoint: str, backend: str = "pytorch", device: str = "cpu", max_batch_size: int = 16):
        from kosmos2_app import load_warm_engine

        self.engine = load_warm_engine(checkpoint, backend, device, max_batch_size)

    def detections(self, images: list[np.ndarray], settings: dict[str, Any]) -> list[list[Detection]]:
        from supervisely.nn.prediction_dto import PredictionBBox

        from kosmos2_app import DescribedRegion, result_to_predictions, settings_policy

        results = self.engine.run(images, settings_policy(settings))
        found = []
        for image, result in zip(images, results):
            dtos = result_to_predictions(result, image.shape[1], image.shape[0])
            found.append([Detection(d.class_name, tuple(d.bbox_tlbr), d.score) for d in dtos
                          if isinstance(d, PredictionBBox) and not isinstance(d, DescribedRegion)])  # fmt: skip
        return found


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
        return [[found for label in ann.labels if (found := _detection(label)) is not None] for ann in annotations]


def _detection(label) -> Detection | None:
    """A label with a ``confidence`` as a detection; None for one without (a described region)."""
    tag = label.tags.get("confidence")
    if tag is None:
        return None
    box = label.geometry.to_bbox()
    return Detection(label.obj_class.name, (box.top, box.left, box.bottom, box.right), float(tag.value))
