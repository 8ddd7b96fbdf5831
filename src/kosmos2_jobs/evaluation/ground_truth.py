"""The labelled boxes of a project: a Supervisely-format folder, or a project or dataset through
``sly.Api``. Rectangles are targets as they are; polygons, bitmaps and other shapes with an area
by their bounding box (a class of any shape is evaluated too). Shapes without an area (points,
lines, graphs) cannot be a box's target: they are counted and left out, as are labels of classes
not evaluated. Boxes are inclusive pixel
``(top, left, bottom, right)``. Read ``with_masks``, polygons and bitmaps are also kept as their
masks (COCO RLE of the whole image), for mask AP.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervisely as sly

from supervisely_io.sources import Item, local_items, remote_items

from .coco_metrics import Box

AREA_SHAPES = frozenset({"rectangle", "polygon", "bitmap", "alpha_mask", "oriented_bbox"})
MASK_SHAPES = frozenset({"polygon", "bitmap", "alpha_mask"})  # a target whose mask is not its box


@dataclass(frozen=True)
class LabelledImage:
    """One image and its target boxes, ``(class name, (top, left, bottom, right))`` each; read
    with masks, ``masks`` holds per box its mask (COCO RLE) or ``None`` (a rectangle)."""

    item: Item
    height: int
    width: int
    boxes: tuple[tuple[str, Box], ...]
    masks: tuple[dict | None, ...] = ()


@dataclass
class GroundTruth:
    """The images to evaluate on, the classes evaluated, and what was left out and why."""

    images: list[LabelledImage] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    left_out_labels: Counter = field(default_factory=Counter)  # reason -> labels
    unreadable: list[dict[str, str]] = field(default_factory=list)  # {"image", "reason"}

    @property
    def mask_targets(self) -> int:
        """Targets read as masks (polygons, bitmaps): 0 when read without masks."""
        return sum(rle is not None for image in self.images for rle in image.masks)


def evaluated_classes(meta: sly.ProjectMeta, chosen: list[str] | None) -> list[str]:
    """The meta's classes with an area (or ``chosen``, each of which must be one), in order."""
    with_area = [c.name for c in meta.obj_classes if c.geometry_type.geometry_name() in (*AREA_SHAPES, "any")]
    if not chosen:
        return with_area
    unknown = [name for name in chosen if name not in with_area]
    if unknown:
        raise ValueError(f"classes {unknown} are not classes with an area in the project; it has {with_area}")
    return list(chosen)


def labelled_image(
    item: Item, annotation: dict, meta: sly.ProjectMeta, classes: list[str], left_out: Counter, with_masks: bool = False
):
    """The targets of one annotation JSON; what is left out is counted in ``left_out``."""
    ann = sly.Annotation.from_json(annotation, meta)
    boxes, masks = [], []
    for label in ann.labels:
        shape = label.geometry.geometry_name()
        if shape not in AREA_SHAPES:
            left_out[f"{shape}: no area"] += 1
        elif label.obj_class.name not in classes:
            left_out["class not evaluated"] += 1
        else:
            box = label.geometry.to_bbox()
            boxes.append((label.obj_class.name, (box.top, box.left, box.bottom, box.right)))
            if with_masks:
                masks.append(_mask_of(label, ann.img_size) if shape in MASK_SHAPES else None)
    height, width = ann.img_size
    return LabelledImage(item, height, width, tuple(boxes), tuple(masks))


def _mask_of(label: sly.Label, size: tuple[int, int]) -> dict:
    from pycocotools import mask as coco_mask

    return coco_mask.encode(np.asfortranarray(label.geometry.get_mask(tuple(size)).astype(np.uint8)))


def read_project_folder(root: Path, classes: list[str] | None = None, with_masks: bool = False) -> GroundTruth:
    """The ground truth of a Supervisely-format project folder (its masks too, ``with_masks``)."""
    root = Path(root)
    if not (root / "meta.json").is_file():
        raise FileNotFoundError(f"{root} is not a Supervisely-format project (no meta.json)")
    meta = sly.ProjectMeta.from_json(json.loads((root / "meta.json").read_text()))
    truth = GroundTruth(classes=evaluated_classes(meta, classes))
    for item in local_items(root):
        path = Path(item.path).parent.parent / "ann" / f"{item.name}.json"
        try:
            annotation = json.loads(path.read_text())
            truth.images.append(
                labelled_image(item, annotation, meta, truth.classes, truth.left_out_labels, with_masks)
            )
        except Exception as error:  # noqa: BLE001 - an unreadable annotation is counted, never fatal
            truth.unreadable.append({"image": item.key, "reason": f"annotation: {type(error).__name__}: {error}"})
    return truth


def read_remote(api, kind: str, number: int, classes: list[str] | None = None, with_masks: bool = False) -> GroundTruth:
    """The ground truth of Supervisely ``project`` or ``dataset`` ``number``, through ``api``
    (its masks too, ``with_masks``)."""
    project_id = number if kind == "project" else api.dataset.get_info_by_id(number).project_id
    meta = sly.ProjectMeta.from_json(api.project.get_meta(project_id))
    truth = GroundTruth(classes=evaluated_classes(meta, classes))
    items = list(remote_items(api, project_id=number if kind == "project" else None,
                              dataset_id=number if kind == "dataset" else None))  # fmt: skip
    for dataset_id in dict.fromkeys(item.dataset_id for item in items):
        in_dataset = [item for item in items if item.dataset_id == dataset_id]
        infos = api.annotation.download_batch(dataset_id, [item.image_id for item in in_dataset])
        for item, info in zip(in_dataset, infos):
            try:
                truth.images.append(
                    labelled_image(item, info.annotation, meta, truth.classes, truth.left_out_labels, with_masks)
                )
            except Exception as error:  # noqa: BLE001 - counted, never fatal
                truth.unreadable.append({"image": item.key, "reason": f"annotation: {type(error).__name__}: {error}"})
    return truth
