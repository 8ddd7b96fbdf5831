"""Supervisely annotations of engine results, and the project meta they need: the one builder
that the server and the labelling job share, so that both write the same annotation for the
same image and settings.

A box is a rectangle (inclusive pixel ``top, left, bottom, right``) of the class named by its
phrase, created on first use with a colour hashed from the name, and tagged with its
``confidence``; a described region is a rectangle of class ``region`` tagged with its
``description``; the caption or answer is an image tag. Every label is marked as made by a
model (``LabelingStatus.AUTO``), as the SDK marks its predictions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import supervisely as sly
from supervisely.annotation.label import LabelingStatus
from supervisely.nn.prediction_dto import PredictionBBox

from kosmos2_engine import BoxMask, TaskResult

from ..regions_of_interest import Crop
from .drawing import DrawnAnnotation
from .predictions import (
    CONFIDENCE_TAG,
    DESCRIPTION_TAG,
    MASK_QUALITY_TAG,
    TEXT_TAGS,
    DescribedRegion,
    ImageText,
    class_colour,
    result_to_predictions,
    shifted,
)


def tag_metas() -> list[sly.TagMeta]:
    """The tags any task writes: ``confidence`` (a number), ``caption``, ``answer`` and
    ``description`` (text)."""
    return [
        sly.TagMeta(CONFIDENCE_TAG, sly.TagValueType.ANY_NUMBER),
        *(sly.TagMeta(name, sly.TagValueType.ANY_STRING) for name in TEXT_TAGS),
    ]


def phrase_class(name: str) -> sly.ObjClass:
    """The rectangle class of phrase ``name``: its colour depends only on the name."""
    return sly.ObjClass(name, sly.Rectangle, class_colour(name))


def kept_boxes(predictions: Sequence, classes_whitelist: Sequence[str] | None = None) -> list[PredictionBBox]:
    """The box DTOs of ``predictions`` whose class ``classes_whitelist`` keeps (``None`` or
    ``"all"``: every class), in order: the boxes an annotation holds, and those masks are made for."""
    kept = None if classes_whitelist in (None, "all") else set(classes_whitelist or ())
    return [p for p in predictions if isinstance(p, PredictionBBox) and (kept is None or p.class_name in kept)]


def boxes_xyxy(boxes: Sequence[PredictionBBox]) -> np.ndarray:
    """float32 (N, 4) pixel ``(x0, y0, x1, y1)``, right and bottom exclusive, of box DTOs
    (inclusive pixel tlbr): what :class:`~kosmos2_engine.BoxSegmenter` takes."""
    tlbr = np.array([box.bbox_tlbr for box in boxes], np.float32).reshape(-1, 4)
    return tlbr[:, [1, 0, 3, 2]] + np.array([0, 0, 1, 1], np.float32)


def with_mask_class(meta: sly.ProjectMeta, name: str, declared: bool = False) -> sly.ProjectMeta:
    """``meta`` where class ``name`` can hold bitmaps, and the ``mask_quality`` tag exists. A
    Bitmap or any-geometry class stays; a rectangle class of that name is widened to any
    geometry (its rectangles and its bitmaps), its colour kept; a new class is any-geometry, or
    a Bitmap class when ``declared`` (a class declared with geometry ``mask``)."""
    obj_class = meta.get_obj_class(name)
    if obj_class is None:
        meta = meta.add_obj_class(sly.ObjClass(name, sly.Bitmap if declared else sly.AnyGeometry, class_colour(name)))
    elif obj_class.geometry_type not in (sly.Bitmap, sly.AnyGeometry):
        meta = _widened(meta, obj_class)
    if meta.get_tag_meta(MASK_QUALITY_TAG) is None:
        meta = meta.add_tag_meta(sly.TagMeta(MASK_QUALITY_TAG, sly.TagValueType.ANY_NUMBER))
    return meta


def with_box_class(meta: sly.ProjectMeta, name: str) -> sly.ProjectMeta:
    """``meta`` where class ``name`` can hold rectangles: a new rectangle class, or a Bitmap class
    (declared ``mask``, whose box got no mask or is kept) widened to any geometry."""
    obj_class = meta.get_obj_class(name)
    if obj_class is None:
        return meta.add_obj_class(phrase_class(name))
    return _widened(meta, obj_class) if obj_class.geometry_type is sly.Bitmap else meta


def _widened(meta: sly.ProjectMeta, obj_class: sly.ObjClass) -> sly.ProjectMeta:
    return meta.delete_obj_class(obj_class.name).add_obj_class(
        sly.ObjClass(obj_class.name, sly.AnyGeometry, obj_class.color)
    )


def meta_with(
    meta: sly.ProjectMeta, class_names: Iterable[str] = (), masks: bool = False, masked: Iterable[str] = ()
) -> sly.ProjectMeta:
    """``meta`` plus the task tags and the phrase classes of ``class_names`` that it lacks;
    with ``masks``, those classes take any geometry (see :func:`with_mask_class`); the names in
    ``masked`` (declared ``mask``) are Bitmap classes."""
    for tag_meta in tag_metas():
        if meta.get_tag_meta(tag_meta.name) is None:
            meta = meta.add_tag_meta(tag_meta)
    masked = set(masked)
    for name in class_names:
        if masks or name in masked:
            meta = with_mask_class(meta, name, declared=name in masked and not masks)
        elif meta.get_obj_class(name) is None:
            meta = meta.add_obj_class(phrase_class(name))
    return meta


class AnnotationBuilder:
    """Annotations of prediction DTOs, with the meta they need grown as phrases appear.

    Thread-safe: requests build annotations in parallel threads. ``on_meta_change`` is called
    (under the builder's lock) with every new meta, for a server that publishes it.
    """

    def __init__(
        self,
        meta: sly.ProjectMeta | None = None,
        on_meta_change: Callable[[sly.ProjectMeta], None] | None = None,
    ):
        self._meta_lock = threading.Lock()
        self._on_meta_change = on_meta_change
        self._meta = meta_with(meta or sly.ProjectMeta())
        if on_meta_change is not None:
            on_meta_change(self._meta)

    @property
    def meta(self) -> sly.ProjectMeta:
        """Every tag the tasks write, the declared classes and every class met so far."""
        return self._meta

    def declare(self, class_names: Iterable[str], masked: Iterable[str] = ()) -> None:
        """Add the classes of ``class_names`` that the meta lacks (a deploy's declared classes):
        rectangle classes, Bitmap classes for the names in ``masked``."""
        with self._meta_lock:
            self._adopt(meta_with(self._meta, class_names, masked=masked))

    def _adopt(self, meta: sly.ProjectMeta) -> None:
        """Make ``meta`` the builder's, published only when it changed (call under the lock)."""
        if meta is not self._meta:
            self._meta = meta
            if self._on_meta_change is not None:
                self._on_meta_change(meta)

    def annotation(
        self,
        height: int,
        width: int,
        predictions: Sequence,
        classes_whitelist: Sequence[str] | None = None,
        masks: Sequence[BoxMask] | None = None,
        keep_boxes: bool = False,
    ) -> DrawnAnnotation:
        """The annotation of one ``height`` x ``width`` image from its DTOs (see
        :func:`~.predictions.result_to_predictions`). Boxes whose class is not in
        ``classes_whitelist`` are left out (``None`` or ``"all"``: every class), as the SDK does.
        ``masks``, one per box of :func:`kept_boxes` (in its order), turn boxes into Bitmap labels
        (a box whose mask is empty stays a rectangle); ``keep_boxes`` keeps the rectangles too."""
        boxes = kept_boxes(predictions, classes_whitelist)
        texts = [p for p in predictions if isinstance(p, ImageText)]
        with self._meta_lock:
            labels = []
            for index, box in enumerate(boxes):
                mask = masks[index] if masks is not None else None
                if mask is None or mask.area == 0 or keep_boxes:
                    labels.append(self._label(box))
                if mask is not None and mask.area > 0:
                    labels.append(self._mask_label(box, mask))
            tags = [sly.Tag(self._meta.get_tag_meta(text.tag), text.value) for text in texts]
        return DrawnAnnotation((height, width), labels, img_tags=tags)

    def predictions_of(self, result: TaskResult, height: int, width: int, crop: Crop | None = None) -> list:
        """The DTOs of one ``height`` x ``width`` image's :class:`~kosmos2_engine.TaskResult`;
        when the model saw only ``crop`` of the image, its boxes are shifted back into the image."""
        if crop is None:
            return result_to_predictions(result, width, height)
        inside = result_to_predictions(result, crop.right - crop.left + 1, crop.bottom - crop.top + 1)
        return shifted(inside, crop.top, crop.left)

    def annotation_of(
        self,
        result: TaskResult,
        height: int,
        width: int,
        classes_whitelist: Sequence[str] | None = None,
        crop: Crop | None = None,
    ) -> DrawnAnnotation:
        """The annotation of one image's result (see :meth:`predictions_of` and :meth:`annotation`)."""
        return self.annotation(height, width, self.predictions_of(result, height, width, crop), classes_whitelist)

    def _mask_label(self, dto: PredictionBBox, mask: BoxMask) -> sly.Label:
        """A Bitmap label of the box's class (one that can hold bitmaps from now on, see
        :func:`with_mask_class`), tagged with the box's confidence and the mask's quality."""
        meta = with_mask_class(self._meta, dto.class_name)
        obj_class = meta.get_obj_class(dto.class_name)
        self._adopt(meta)
        tags = [sly.Tag(self._meta.get_tag_meta(MASK_QUALITY_TAG), round(mask.quality, 4))]
        if dto.score is not None:
            tags.insert(0, sly.Tag(self._meta.get_tag_meta(CONFIDENCE_TAG), dto.score))
        bitmap = sly.Bitmap(mask.mask, origin=sly.PointLocation(*mask.origin))
        label = sly.Label(bitmap, obj_class, tags)
        label.status = LabelingStatus.AUTO
        return label

    def _label(self, dto: PredictionBBox) -> sly.Label:
        self._adopt(with_box_class(self._meta, dto.class_name))
        obj_class = self._meta.get_obj_class(dto.class_name)
        if isinstance(dto, DescribedRegion):
            tags = [sly.Tag(self._meta.get_tag_meta(DESCRIPTION_TAG), dto.description)]
        else:
            tags = [] if dto.score is None else [sly.Tag(self._meta.get_tag_meta(CONFIDENCE_TAG), dto.score)]
        label = sly.Label(sly.Rectangle(*dto.bbox_tlbr), obj_class, tags)
        label.status = LabelingStatus.AUTO
        return label
