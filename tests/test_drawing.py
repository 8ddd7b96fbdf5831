"""Drawn results: outlines in the class colour, a label with the phrase and its confidence, the
caption in a band above; and the SDK's CLI ``predict --draw`` drawing with it."""

from __future__ import annotations

import numpy as np
import supervisely as sly

from kosmos2_app.drawing import DrawnAnnotation, draw_annotation
from kosmos2_app.predictions import class_colour


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
