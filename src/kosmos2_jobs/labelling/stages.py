"""The two stages of a labelling job, as Ray Data runs them.

:func:`read_images` runs in Ray tasks: it reads each item's bytes (a local file, or a download
by id), decodes them as the server decodes uploads, and puts the image into the output project.
:class:`LabelImages` runs in an actor pool, one :class:`~kosmos2_engine.Kosmos2Engine` per
actor: it labels the decoded images and writes each annotation, built as the server builds it.

Both take and return Ray Data batches in the ``numpy`` format (a dict of column arrays):
``dataset``, ``name``, ``path``, ``image_id``, ``dataset_id`` (see :class:`~.sources.Item`),
plus ``pixels`` (RGB uint8 (H, W, 3); (0, 0, 3) when it failed) and ``error`` ("" or why)
after reading, and ``key``, ``outcome`` (``done``, ``found``, ``failed``) and ``error`` after
labelling. Nothing here runs at import: workers import it to unpickle the stages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from supervisely_io.output import ProjectOutput
from supervisely_io.sources import Item, read_local, read_remote

ITEM_COLUMNS = ("dataset", "name", "path", "image_id", "dataset_id")
NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def batch_items(batch: dict[str, np.ndarray]) -> list[Item]:
    columns = [batch[name] for name in ITEM_COLUMNS]
    return [Item.from_row(dict(zip(ITEM_COLUMNS, values))) for values in zip(*columns)]


def read_images(
    batch: dict[str, np.ndarray],
    output: ProjectOutput,
    max_pixels: int,
    max_bytes: int,
    api_factory: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Read, decode and (when the output keeps images) copy each item of ``batch``; an image
    that cannot be read gets its reason in ``error`` instead of failing the batch."""
    from supervisely_io.images import decode_image

    items = batch_items(batch)
    downloaded, download_error = _downloads([item for item in items if item.image_id], api_factory)
    pixels, errors = [], []
    for item in items:
        try:
            if item.image_id and download_error:
                raise ValueError(download_error)
            data = downloaded[item.image_id] if item.image_id else read_local(item, max_bytes)
            image = decode_image(data, max_pixels)
            if output.keep_images:
                output.write_image(item, data if item.image_id else None)
        except Exception as error:  # noqa: BLE001 - any unreadable image is recorded, never fatal
            pixels.append(NO_PIXELS)
            errors.append(str(error) or type(error).__name__)
        else:
            pixels.append(image)
            errors.append("")
    return {**{name: batch[name] for name in ITEM_COLUMNS}, "pixels": pixels, "error": np.array(errors, dtype=object)}


def _downloads(items: list[Item], api_factory) -> tuple[dict[int, bytes], str]:
    if not items:
        return {}, ""
    try:
        return dict(zip((item.image_id for item in items), read_remote(items, api_factory))), ""
    except Exception as error:  # noqa: BLE001 - the batch's images fail with the reason
        return {}, f"download failed: {type(error).__name__}: {error}"


@dataclass(frozen=True)
class EngineSpec:
    """What each actor loads: ``checkpoint`` (hub id or folder) with ``backend`` on ``device``,
    ``threads`` torch threads on CPU, batches of up to ``max_batch_size`` prompts; and ``sam2``
    (hub id or folder) when the job asks for masks, else ``None``."""

    checkpoint: str
    backend: str
    device: str
    threads: int
    max_batch_size: int
    sam2: str | None = None


class LabelImages:
    """One engine (and SAM 2, for masks), loaded and warmed up once per actor; called with
    batches of read images. With ``masks: true`` the boxes of a batch's images are segmented
    as the server segments them: one image encoding per image, an image's boxes in one call."""

    def __init__(self, spec: EngineSpec, settings: dict[str, Any], output: ProjectOutput, classes_log: str):
        import torch

        from kosmos2_app import AnnotationBuilder, MaskOptions, load_warm_engine, sam2_encoder_of, settings_policy
        from kosmos2_engine import BoxSegmenter

        if spec.device == "cpu":
            torch.set_num_threads(spec.threads)
        self.engine = load_warm_engine(spec.checkpoint, spec.backend, spec.device, spec.max_batch_size)
        self.policy = settings_policy(settings)
        self.masks = MaskOptions.parse(settings)
        self.segmenter = None  # SAM 2, its image encoder in OpenVINO on an OpenVINO backend, as the server has it
        if self.masks.masks and spec.sam2:
            self.segmenter = BoxSegmenter.load(spec.sam2, spec.device, sam2_encoder_of(spec.backend))
        self.classes_whitelist = settings.get("classes")
        self.builder = AnnotationBuilder()
        self.output = output
        self.classes_log = classes_log
        self.logged_classes: set[str] = set()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items, errors = batch_items(batch), list(batch["error"])
        todo = [i for i, item in enumerate(items) if not errors[i] and not self.output.is_done(item)]
        outcomes = ["failed" if errors[i] else "found" for i in range(len(items))]
        labelled = []
        for i, result in zip(todo, self._results([batch["pixels"][i] for i in todo])):
            if isinstance(result, Exception):
                errors[i] = f"labelling failed: {type(result).__name__}: {result}"
            else:
                labelled.append((i, result))
        annotations = self._annotations([batch["pixels"][i] for i, _ in labelled], [r for _, r in labelled])
        for (i, _), annotation in zip(labelled, annotations):
            if isinstance(annotation, Exception):
                errors[i] = f"masks failed: {type(annotation).__name__}: {annotation}"
                continue
            self._log_classes({label.obj_class.name for label in annotation.labels})
            written = self.output.write_annotation(items[i], annotation.to_json())
            outcomes[i] = "done" if written else "found"
        return {"key": [item.key for item in items], "outcome": outcomes, "error": errors}

    def _annotations(self, images: list[np.ndarray], results: list) -> list:
        """Each image's annotation from its result; with masks, every kept box of the images
        segmented in one :meth:`~kosmos2_engine.BoxSegmenter.segment` call (an error there fails
        these images, with its reason)."""
        from kosmos2_app import boxes_xyxy, kept_boxes

        predictions = [self.builder.predictions_of(r, *image.shape[:2]) for r, image in zip(results, images)]
        masks: list = [None] * len(images)
        if self.segmenter is not None and images:
            boxes = [boxes_xyxy(kept_boxes(p, self.classes_whitelist)) for p in predictions]
            try:
                masks = self.segmenter.segment(images, boxes)
            except Exception as error:  # noqa: BLE001 - these images fail with the reason
                return [error] * len(images)
        return [
            self.builder.annotation(*image.shape[:2], p, self.classes_whitelist, m, self.masks.keep_boxes)
            for image, p, m in zip(images, predictions, masks)
        ]

    def _results(self, images: list[np.ndarray]) -> list:
        """The engine's results, or per image the error that kept it from one (a bad batch is
        run again image by image, so that one image's error fails only that image)."""
        if not images:
            return []
        try:
            return self.engine.run(images, self.policy)
        except Exception as error:  # noqa: BLE001 - isolated below
            if len(images) == 1:
                return [error]
        return [result for image in images for result in self._results([image])]

    def _log_classes(self, names: set[str]) -> None:
        """Append class names not yet logged by this actor to the job's class log, before the
        annotation that uses them is published: every written annotation's classes are in
        the log, whatever is interrupted when."""
        new = sorted(names - self.logged_classes)
        if not new:
            return
        with open(self.classes_log, "a", encoding="utf-8") as log:
            log.write("".join(json.dumps(name, ensure_ascii=False) + "\n" for name in new))
            log.flush()
        self.logged_classes.update(new)
