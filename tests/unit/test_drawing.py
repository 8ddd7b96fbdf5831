"""Drawn results: outlines in the class colour, a label with the phrase and its confidence, the
caption in a band above; and the SDK's CLI ``predict --draw`` drawing with it."""

from __future__ import annotations

import numpy as np
import supervisely as sly
from PIL import Image, ImageDraw

from kosmos2_app.results.drawing import DrawnAnnotation, draw_annotation, font_for, wrapped
from kosmos2_app.results.predictions import class_colour


def _annotation(caption: str | None = "An image of a red circle") -> sly.Annotation:
    circle = sly.ObjClass("a red circle", sly.Rectangle, class_colour("a red circle"))
    confidence = sly.TagMeta("confidence", sly.TagValueType.ANY_NUMBER)
    caption_meta = sly.TagMeta("caption", sly.TagValueType.ANY_STRING)
    label = sly.Label(sly.Rectangle(20, 30, 60, 90), circle, [sly.Tag(confidence, 0.8312)])
    tags = [sly.Tag(caption_meta, caption)] if caption else []
    return sly.Annotation((100, 160), [label], tags)


def test_boxes_are_outlined_in_their_class_colour_and_labelled():
    image = np.full((100, 160, 3), 90, np.uint8)
    drawn = draw_annotation(image, _annotation(caption=None))
    assert drawn.shape == image.shape
    colour = class_colour("a red circle")
    assert drawn[40, 30].tolist() == colour and drawn[60, 90].tolist() == colour  # left and bottom edges
    assert drawn[45, 60].tolist() == [90, 90, 90]  # inside stays the image
    above = drawn[:20, 30:90].reshape(-1, 3).tolist()
    assert above.count(colour) > 100  # the label's box, above the rectangle
    assert len({tuple(p) for p in above}) > 2  # with text on it


def test_the_caption_goes_in_a_band_above_the_image():
    image = np.full((100, 160, 3), 90, np.uint8)
    drawn = draw_annotation(image, _annotation())
    band = drawn.shape[0] - 100
    assert drawn.shape[1:] == (160, 3) and 8 < band < 60
    assert (drawn[:band] < 128).any() and drawn[band:][45, 60].tolist() == [90, 90, 90]


def test_colours_depend_only_on_the_class_name():
    assert class_colour("a red circle") == class_colour("a red circle") != class_colour("a blue square")


def test_draw_pretty_writes_the_drawing(tmp_path):
    image = np.full((100, 160, 3), 90, np.uint8)
    ann = DrawnAnnotation.of(_annotation())
    ann.draw_pretty(image, output_path=str(tmp_path / "drawn.png"))
    written = sly.image.read(str(tmp_path / "drawn.png"))
    assert written.tolist() == draw_annotation(np.full((100, 160, 3), 90, np.uint8), ann).tolist()


def _labels_at_one_corner() -> sly.Annotation:
    confidence = sly.TagMeta("confidence", sly.TagValueType.ANY_NUMBER)
    labels = []
    for name, bottom in (("circle", 80), ("square", 90)):
        obj_class = sly.ObjClass(name, sly.Rectangle, class_colour(name))
        labels.append(sly.Label(sly.Rectangle(30, 20, bottom, 140), obj_class, [sly.Tag(confidence, 0.5)]))
    return sly.Annotation((100, 160), labels)


def test_labels_of_boxes_that_share_a_corner_do_not_cover_each_other():
    drawn = draw_annotation(np.full((100, 160, 3), 90, np.uint8), _labels_at_one_corner())
    circle_label = np.all(drawn[:30] == class_colour("circle"), axis=-1).sum()  # above the boxes' top edge
    square_label = np.all(drawn[32:60, 22:138] == class_colour("square"), axis=-1).sum()  # inside, below it
    assert circle_label > 400 and square_label > 400, (circle_label, square_label)


def test_a_long_caption_wraps_inside_the_image():
    words = "An image of a red circle and a blue square and a green triangle on a grey floor".split()
    image = np.full((60, 90, 3), 90, np.uint8)
    drawn = draw_annotation(image, _annotation(" ".join(words)))
    one_line = draw_annotation(image, _annotation("An image"))
    assert drawn.shape[1] == 90 and drawn.shape[0] - 60 > 3 * (one_line.shape[0] - 60) - 12  # several lines
    lines = wrapped(" ".join(words), font_for(60), 82)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    assert " ".join(lines).split() == words and all(probe.textlength(line, font=font_for(60)) <= 82 for line in lines)


def test_masks_are_filled_translucent_in_their_class_colour():
    square = sly.ObjClass("square", sly.AnyGeometry, [0, 200, 0])
    mask = np.zeros((30, 40), bool)
    mask[5:25, 10:30] = True  # the mask's own pixels, from its origin at row 50, column 60
    label = sly.Label(sly.Bitmap(mask, origin=sly.PointLocation(50, 60)), square)
    drawn = draw_annotation(np.full((100, 160, 3), 100, np.uint8), sly.Annotation((100, 160), [label]))
    inside, outside = drawn[50 + 15, 60 + 20].tolist(), drawn[50 + 2, 60 + 2].tolist()
    assert inside == [55, 145, 55] and outside == [100, 100, 100]  # 0.45 of the colour over 0.55 of the image
