"""The paper's benchmarks, for users who have the data, read from their standard files.

- **Referring expressions** (RefCOCO, RefCOCO+, RefCOCOg): the refer toolkit's ``refs(<split
  by>).p`` and ``instances.json``; each expression of a split is asked as a
  ``referring_expression`` (the top box), and is right when that box has IoU >= 0.5 with its
  object's box. The paper reports 52.32 on RefCOCO val and 61.65 on RefCOCOg test (zero-shot).
- **Flickr30k Entities**: ``Sentences/<id>.txt`` and ``Annotations/<id>.xml``; every phrase of an
  image's sentences that has boxes (``notvisual`` ones have none) is grounded, all of an image's
  phrases in one run, and is right when its best-scored box has IoU >= 0.5 with one of its
  entity's boxes (the any-box protocol): Recall@1. The paper reports 78.7 on the test split.

Boxes are compared as COCO ``[x, y, width, height]``; an inclusive pixel box has width
``right - left + 1``, and so do Flickr30k's ``xmin..xmax``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coco_metrics import coco_box
from .runners import Runner

IOU_HIT = 0.5
MAX_PHRASES = 32  # a phrase_grounding request's most phrases


@dataclass(frozen=True)
class Case:
    """One question with its answer: ``text`` asked about image ``image`` (a file name), right
    when the answer's box overlaps one of ``targets`` (COCO ``[x, y, w, h]``) by IoU >= 0.5."""

    image: str
    text: str
    targets: tuple[tuple[float, float, float, float], ...]


@dataclass(frozen=True)
class ProtocolResult:
    name: str
    cases: int
    right: int
    unreadable_images: int

    @property
    def accuracy(self) -> float:
        return self.right / self.cases if self.cases else 0.0

    def as_dict(self) -> dict:
        return {"protocol": self.name, "cases": self.cases, "right": self.right,
                "accuracy": round(self.accuracy, 4), "unreadable_images": self.unreadable_images}  # fmt: skip


def iou(a, b) -> float:
    """IoU of two COCO boxes ``[x, y, w, h]``."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return w * h / union if union > 0 else 0.0


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: a refs file that asks for any class (code
    to run) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refs file asks for {module}.{name}: only plain data is read")


def read_refer(refs: Path, instances: Path, split: str) -> list[Case]:
    """The expressions of ``split`` (``val``, ``test``, ``testA``, ...) from the refer files."""
    rows = _PlainData(io.BytesIO(Path(refs).read_bytes()), encoding="latin1").load()
    coco = json.loads(Path(instances).read_text())
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    boxes = {ann["id"]: _xywh(ann["bbox"]) for ann in coco["annotations"]}
    cases = [
        Case(files[row["image_id"]], sentence["sent"], (boxes[row["ann_id"]],))
        for row in rows
        if row["split"] == split
        for sentence in row["sentences"]
    ]
    if not cases:
        raise ValueError(f"no expressions in split '{split}' of {refs}")
    return cases


def _xywh(values: list) -> tuple[float, float, float, float]:
    x, y, width, height = (float(v) for v in values)
    return x, y, width, height


_ENTITY = re.compile(r"\[/EN#(\d+)/(\S+) ([^\]]+)\]")


def read_flickr30k(entities: Path, ids: list[str]) -> list[Case]:
    """Every phrase with boxes of images ``ids`` from ``entities`` (``Sentences/``, ``Annotations/``)."""
    cases = []
    for image_id in ids:
        root = ElementTree.parse(Path(entities) / "Annotations" / f"{image_id}.xml").getroot()
        boxes: dict[str, list] = {}
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            if box is None:
                continue
            x1, y1, x2, y2 = (float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
            for name in obj.iter("name"):
                boxes.setdefault((name.text or "").strip(), []).append((x1, y1, x2 - x1 + 1, y2 - y1 + 1))
        text = (Path(entities) / "Sentences" / f"{image_id}.txt").read_text(encoding="utf-8")
        for line in text.splitlines():
            for entity, kinds, phrase in _ENTITY.findall(line):
                if "notvisual" not in kinds.split("/") and entity in boxes:
                    cases.append(Case(f"{image_id}.jpg", phrase.strip(), tuple(boxes[entity])))
    return cases


def run_refer(cases: list[Case], runner: Runner, read_image: Callable[[str], np.ndarray], name: str) -> ProtocolResult:
    """Accuracy@0.5 of ``referring_expression`` (top box) over ``cases``."""

    def answer(pixels: np.ndarray, group: list[Case]) -> int:
        right = 0
        for case in group:
            settings = {"task": "referring_expression", "expression": case.text, "top_k": 1}
            [found] = runner.detections([pixels], settings)
            right += _hit(found, case)
        return right

    return _per_image(cases, read_image, answer, name)


def run_flickr30k(cases: list[Case], runner: Runner, read_image: Callable[[str], np.ndarray]) -> ProtocolResult:
    """Recall@1 of ``phrase_grounding`` over ``cases``, an image's phrases in one run."""

    def answer(pixels: np.ndarray, group: list[Case]) -> int:
        phrases, found = list(dict.fromkeys(case.text for case in group)), []
        for start in range(0, len(phrases), MAX_PHRASES):
            settings = {"task": "phrase_grounding", "phrases": phrases[start : start + MAX_PHRASES]}
            found += runner.detections([pixels], settings)[0]
        return sum(_hit([d for d in found if d.name == case.text], case) for case in group)

    return _per_image(cases, read_image, answer, "Flickr30k Entities R@1")


def _per_image(cases: list[Case], read_image, answer, name: str) -> ProtocolResult:
    """``answer(pixels, cases of that image)`` (how many are right) over the images; an image
    that cannot be read counts its cases wrong."""
    right, unreadable = 0, 0
    for image_name, group in _by_image(cases).items():
        try:
            pixels = read_image(image_name)
        except Exception:  # noqa: BLE001 - counted; its cases are wrong
            unreadable += 1
            continue
        right += answer(pixels, group)
    return ProtocolResult(name, len(cases), right, unreadable)


def _by_image(cases: list[Case]) -> dict[str, list[Case]]:
    grouped: dict[str, list[Case]] = {}
    for case in cases:
        grouped.setdefault(case.image, []).append(case)
    return grouped


def _hit(found, case: Case) -> bool:
    """Whether the best-scored detection overlaps a target by IoU >= 0.5."""
    if not found:
        return False
    best = max(found, key=lambda d: d.score)
    return any(iou(coco_box(best.box), target) >= IOU_HIT for target in case.targets)
