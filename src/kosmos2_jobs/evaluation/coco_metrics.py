"""Detection metrics of predicted boxes (or their masks) against targets, computed by pycocotools.

AP, AP50 and AP75 (overall and per class) are COCOeval's. Precision, recall and F1 against the
confidence threshold are counted from COCOeval's own matching at IoU 0.5 (each target matched at
most once, best scores first): a detection is a true positive when it is matched, a false one
otherwise. The recommended ``confidence_threshold`` is where F1 is highest (the higher threshold
on a tie). Boxes are inclusive pixel ``(top, left, bottom, right)``, given to COCO as ``[left,
top, width, height]`` with ``width = right - left + 1``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]


def coco_box(box: Box) -> list[float]:
    top, left, bottom, right = box
    return [float(left), float(top), float(right - left + 1), float(bottom - top + 1)]


@dataclass(frozen=True)
class Sweep:
    """Precision, recall and F1 at each threshold (descending scores), and the best F1."""

    thresholds: list[float]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    targets: int

    @property
    def best(self) -> tuple[float, float]:
        """(threshold, F1) where F1 is highest; (1.0, 0.0) when nothing was detected."""
        if not self.f1:
            return 1.0, 0.0
        index = int(np.argmax(self.f1))  # the first maximum: the highest threshold
        return self.thresholds[index], self.f1[index]

    def at(self, threshold: float) -> tuple[float, float, float]:
        """(precision, recall, F1) keeping the detections scored at least ``threshold``."""
        kept = [i for i, t in enumerate(self.thresholds) if t >= threshold]
        if not kept:
            return 0.0, 0.0, 0.0
        i = kept[-1]
        return self.precision[i], self.recall[i], self.f1[i]


def sweep(scores: list[float], matched: list[bool], targets: int) -> Sweep:
    """The threshold sweep of detections with ``scores``, ``matched`` or not, over ``targets``."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    thresholds, precision, recall, f1 = [], [], [], []
    tp = fp = 0
    for rank, index in enumerate(order):
        tp, fp = tp + bool(matched[index]), fp + (not matched[index])
        last_of_score = rank + 1 == len(order) or scores[order[rank + 1]] != scores[index]
        if last_of_score:  # a threshold keeps every detection with that score
            p, r = tp / (tp + fp), (tp / targets if targets else 0.0)
            thresholds.append(float(scores[index]))
            precision.append(p)
            recall.append(r)
            f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return Sweep(thresholds, precision, recall, f1, targets)


@dataclass
class BoxMetrics:
    """What :func:`evaluate_boxes` measures. APs are -1 where a class has no target."""

    ap: float
    ap50: float
    ap75: float
    per_class_ap: dict[str, tuple[float, float, float]]  # class -> (AP, AP50, AP75)
    overall: Sweep
    per_class: dict[str, Sweep]
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # class -> (recall, precision)
    matched: list[list[bool]] = field(default_factory=list)  # per image, per detection: matched at IoU 0.5

    @property
    def recommended_threshold(self) -> float:
        return self.overall.best[0]


def evaluate_boxes(
    sizes: list[tuple[int, int]],
    targets: list[list[tuple[str, Box]]],
    detections: list[list[tuple[str, Box, float]]],
    classes: list[str],
) -> BoxMetrics:
    """COCO metrics of ``detections`` (per image: class, box, score) against ``targets`` (per
    image: class, box) on images of ``sizes`` (height, width), over ``classes``."""
    target_rows = [[{"bbox": coco_box(box)} for _, box in boxes] for boxes in targets]
    detection_rows = [[{"bbox": coco_box(box)} for _, box, _ in found] for found in detections]
    return _evaluate(sizes, targets, detections, classes, target_rows, detection_rows, "bbox")


def evaluate_masks(
    sizes: list[tuple[int, int]],
    targets: list[list[tuple[str, Box]]],
    target_masks: list[list[dict | None]],
    detections: list[list[tuple[str, Box, float]]],
    detection_masks: list[list[dict | None]],
    classes: list[str],
) -> BoxMetrics:
    """COCO mask metrics (pycocotools' ``segm``): as :func:`evaluate_boxes`, each target and
    detection compared by its mask (COCO RLE of the whole image, see :func:`mask_rle`); one
    without a mask (``None``: a rectangle target, a box whose mask came out empty) by its box,
    filled."""
    from pycocotools import mask as coco_mask

    def filled(box: Box, size: tuple[int, int]) -> dict:
        return coco_mask.frPyObjects(np.array([coco_box(box)]), *size)[0]

    def rows(boxes, masks, size):
        return [{"segmentation": rle if rle is not None else filled(box, size)} for box, rle in zip(boxes, masks)]

    target_rows = [rows([b for _, b in t], m, size) for t, m, size in zip(targets, target_masks, sizes)]
    detection_rows = [rows([b for _, b, _ in d], m, size) for d, m, size in zip(detections, detection_masks, sizes)]
    for image_rows in target_rows:
        for row in image_rows:
            row["area"] = float(coco_mask.area(row["segmentation"]))
            row["bbox"] = coco_mask.toBbox(row["segmentation"]).tolist()
    return _evaluate(sizes, targets, detections, classes, target_rows, detection_rows, "segm")


def mask_rle(mask, origin: tuple[int, int], size: tuple[int, int]) -> dict:
    """COCO RLE of bool ``mask`` (h, w) placed at ``origin`` (row, column) of a ``size``
    (height, width) image (what sticks out of the image is cut)."""
    from pycocotools import mask as coco_mask

    whole = np.zeros(size, np.uint8, order="F")
    top, left = origin
    part = np.asarray(mask, bool)[: max(0, size[0] - top), : max(0, size[1] - left)]
    whole[top : top + part.shape[0], left : left + part.shape[1]] = part
    return coco_mask.encode(whole)


def _evaluate(sizes, targets, detections, classes, target_rows, detection_rows, iou_type: str) -> BoxMetrics:
    """COCOeval of ``iou_type`` over rows that hold each target's and detection's geometry."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category = {name: k + 1 for k, name in enumerate(classes)}
    truth = COCO()
    annotations: list[dict] = []
    for i, (boxes, image_rows) in enumerate(zip(targets, target_rows)):
        for (name, _), row in zip(boxes, image_rows):
            area = row.get("area", row["bbox"][2] * row["bbox"][3])
            annotations.append({**row, "id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": category[name], "iscrowd": 0, "area": area})  # fmt: skip
    truth.dataset = {
        "images": [{"id": i + 1, "height": h, "width": w} for i, (h, w) in enumerate(sizes)],
        "categories": [{"id": category[name], "name": name} for name in classes],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
    results: list[dict] = []
    for i, (found, image_rows) in enumerate(zip(detections, detection_rows)):
        for (name, _, score), row in zip(found, image_rows):
            results.append({**row, "image_id": i + 1, "category_id": category[name], "score": float(score),
                            "id": len(results) + 1})  # fmt: skip
    if not results or not annotations:
        return _empty(classes, targets, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        predicted = truth.loadRes(results)
        coco_eval = COCOeval(truth, predicted, iou_type)
        coco_eval.params.maxDets = [1, 10, 100]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return _metrics(coco_eval, classes, category, targets, detections, results)


def _class_ap(precision: np.ndarray, k: int, iou_index: slice | int) -> float:
    values = precision[iou_index, :, k, 0, -1]
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def _metrics(coco_eval, classes, category, targets, detections, results) -> BoxMetrics:
    precision = coco_eval.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max dets]
    per_class_ap = {
        name: (_class_ap(precision, k, slice(None)), _class_ap(precision, k, 0), _class_ap(precision, k, 5))
        for k, name in enumerate(classes)
    }
    matched_ids = _matched_at_50(coco_eval)
    matched, flat = [], []
    for result in results:
        flat.append((result["category_id"], result["score"], result["id"] in matched_ids))
    position = 0
    for found in detections:
        matched.append([flat[position + j][2] for j in range(len(found))])
        position += len(found)
    counts = {name: sum(b[0] == name for boxes in targets for b in boxes) for name in classes}
    overall = sweep([f[1] for f in flat], [f[2] for f in flat], sum(counts.values()))
    per_class = {
        name: sweep(
            [f[1] for f in flat if f[0] == category[name]], [f[2] for f in flat if f[0] == category[name]], counts[name]
        )  # fmt: skip
        for name in classes
    }
    recall_points = coco_eval.params.recThrs
    curves = {name: (recall_points, precision[0, :, k, 0, -1]) for k, name in enumerate(classes)}
    stats = coco_eval.stats
    return BoxMetrics(float(stats[0]), float(stats[1]), float(stats[2]), per_class_ap, overall, per_class, curves,
                      matched)  # fmt: skip


def _matched_at_50(coco_eval) -> set[int]:
    """Ids of the detections COCOeval matched to a target at IoU 0.5 (all areas, most detections)."""
    every_area = coco_eval.params.areaRng[0]
    matched = set()
    for entry in coco_eval.evalImgs:
        if entry is None or entry["aRng"] != every_area:
            continue
        for detection_id, match in zip(entry["dtIds"], entry["dtMatches"][0]):
            if match > 0:
                matched.add(int(detection_id))
    return matched


def _empty(classes, targets, detections) -> BoxMetrics:
    """No detection or no target at all: every AP is 0 (or -1 without targets), nothing matched."""
    counts = {name: sum(b[0] == name for boxes in targets for b in boxes) for name in classes}
    none = -1.0 if not sum(counts.values()) else 0.0
    flat = [(name, score) for found in detections for name, _, score in found]
    return BoxMetrics(
        none, none, none,
        {name: ((0.0,) * 3 if counts[name] else (-1.0,) * 3) for name in classes},
        sweep([s for _, s in flat], [False] * len(flat), sum(counts.values())),
        {name: sweep([s for n, s in flat if n == name], [False] * sum(n == name for n, _ in flat), counts[name])
         for name in classes},
        {},
        [[False] * len(found) for found in detections],
    )  # fmt: skip
