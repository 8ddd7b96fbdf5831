"""A labelled project the tiny model can be evaluated on: generated scenes of one or two shapes,
each shape labelled with its class (``circle``, ``square``, ``triangle``), written in Supervisely
format. With ``odd_cases``, also what real projects hold: polygon and bitmap targets, a point
(no area), an image with no labels, and an image that cannot be read. With ``mask_targets``,
every target is a bitmap of the shape's own pixels (for mask AP)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import supervisely as sly

from tests.support.app_harness import png_bytes
from tests.tiny_model.scenes import SHAPES, draw_scene, draw_two_shapes

CLASSES = list(SHAPES)


def scenes(count: int, seed: int = 4242) -> list[tuple[str, np.ndarray, list]]:
    """``count`` scenes: (name, RGB image, drawn shapes); two thirds hold two shapes."""
    rng, found = random.Random(seed), []
    for index in range(count):
        width, height = rng.randint(96, 200), rng.randint(72, 150)
        if index % 3:
            image, drawn = draw_two_shapes(rng, width, height)
        else:
            image, one = draw_scene(rng, width, height)
            drawn = (one,)
        found.append((f"scene_{index:03d}.png", np.asarray(image), list(drawn)))
    return found


def shape_mask(shape, image: np.ndarray) -> np.ndarray:
    """Bool (H, W): the pixels of drawn ``shape`` in ``image`` (inside its box, not the grey
    background: shapes are drawn without anti-aliasing)."""
    left, top, right, bottom = shape.pixel_ltrb
    mask = np.zeros(image.shape[:2], bool)
    part = image[top : bottom + 1, left : right + 1]
    mask[top : bottom + 1, left : right + 1] = ~((part[..., 0] == part[..., 1]) & (part[..., 1] == part[..., 2]))
    return mask


def _label(shape, obj_class: sly.ObjClass, kind: str, image: np.ndarray) -> sly.Label:
    left, top, right, bottom = shape.pixel_ltrb
    if kind == "shape":
        return sly.Label(sly.Bitmap(shape_mask(shape, image)), obj_class)
    if kind == "polygon":
        corners = [(top, left), (top, right), (bottom, right), (bottom, left)]
        return sly.Label(sly.Polygon([sly.PointLocation(r, c) for r, c in corners]), obj_class)
    if kind == "bitmap":
        mask = np.ones((bottom - top + 1, right - left + 1), bool)
        return sly.Label(sly.Bitmap(mask, origin=sly.PointLocation(top, left)), obj_class)
    return sly.Label(sly.Rectangle(top, left, bottom, right), obj_class)


def write_labelled_project(
    root: Path, count: int, odd_cases: bool = False, mask_targets: bool = False
) -> tuple[Path, list]:
    """The project at ``root`` and its scenes; every target is a drawn shape's box. With
    ``odd_cases`` the classes take any shape: the first scene's shapes are polygons, the
    second's bitmaps, the third also has a point. With ``mask_targets`` every target is the
    bitmap of the shape's pixels."""
    shape = sly.Bitmap if mask_targets else sly.AnyGeometry if odd_cases else sly.Rectangle
    classes = {name: sly.ObjClass(name, shape) for name in CLASSES}
    project = sly.Project(str(root), sly.OpenMode.CREATE)
    project.set_meta(sly.ProjectMeta(obj_classes=list(classes.values())))
    dataset = project.create_dataset("shapes")
    drawn_scenes = scenes(count)
    for index, (name, image, drawn) in enumerate(drawn_scenes):
        kind = {0: "polygon", 1: "bitmap"}.get(index, "rectangle") if odd_cases else "rectangle"
        labels = [_label(s, classes[s.shape], "shape" if mask_targets else kind, image) for s in drawn]
        if odd_cases and index == 2:
            labels.append(sly.Label(sly.Point(5, 5), classes["circle"]))
        _add(dataset, root, name, png_bytes(image), sly.Annotation(image.shape[:2], labels))
    if odd_cases:
        blank = np.full((80, 100, 3), 230, np.uint8)
        _add(dataset, root, "empty.png", png_bytes(blank), sly.Annotation((80, 100)))
        _add(dataset, root, "broken.png", png_bytes(blank)[:50], sly.Annotation((80, 100)))
    return root, drawn_scenes


def _add(dataset, root: Path, name: str, data: bytes, ann: sly.Annotation) -> None:
    upload = root / f"upload-{name}"
    upload.write_bytes(data)
    dataset.add_item_file(name, str(upload), ann=ann, _validate_item=False)
    upload.unlink()


def main(argv=None) -> None:
    """``python -m tests.support.evaluation_cases FOLDER [COUNT]``: the README's labelled sample project
    (48 scenes and the odd cases by default), written afresh."""
    import shutil
    import sys

    args = sys.argv[1:] if argv is None else argv
    root, count = Path(args[0]), int(args[1]) if len(args) > 1 else 48
    shutil.rmtree(root, ignore_errors=True)
    write_labelled_project(root, count, odd_cases=True)
    print(root)


if __name__ == "__main__":
    main()
