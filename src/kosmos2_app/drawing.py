"""Drawn results: boxes, phrases and confidences on the image, and the caption or answer above it.

:func:`draw_annotation` is the drawing (Pillow). :class:`DrawnAnnotation` is the annotation the
app returns: the SDK's CLI ``predict --draw`` calls ``ann.draw_pretty(image, output_path=...)``,
which here draws with :func:`draw_annotation` instead of the SDK's filled masks without text.
A class keeps its colour everywhere (the app gives each phrase a colour hashed from its name).
"""

from __future__ import annotations

import numpy as np
import supervisely as sly
from PIL import Image, ImageDraw, ImageFont

from .predictions import DESCRIPTION_TAG, TEXT_TAGS

CONFIDENCE_TAG = "confidence"


def draw_annotation(image: np.ndarray, ann: sly.Annotation) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with every rectangle of ``ann`` outlined in its class
    colour and labelled "phrase 0.83" (its confidence) or "phrase: description", and the
    annotation's caption / answer in a band above the image. Returns a new (H', W, 3) array."""
    font = _font(image.shape[0])
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(min(image.shape[:2]) / 200))
    for label in ann.labels:
        if not isinstance(label.geometry, sly.Rectangle):
            continue
        box = label.geometry
        colour = tuple(label.obj_class.color)
        draw.rectangle((box.left, box.top, box.right, box.bottom), outline=colour, width=width)
        _tag_text(draw, font, _label_text(label), (box.left, box.top), colour, canvas.size)
    text = " | ".join(f"{tag.name}: {tag.value}" for tag in ann.img_tags if tag.name in TEXT_TAGS and tag.value)
    return np.asarray(_with_band(canvas, text, font) if text else canvas)


def _label_text(label: sly.Label) -> str:
    tags = {tag.name: tag.value for tag in label.tags}
    if tags.get(DESCRIPTION_TAG):
        return f"{label.obj_class.name}: {tags[DESCRIPTION_TAG]}"
    confidence = tags.get(CONFIDENCE_TAG)
    return label.obj_class.name if confidence is None else f"{label.obj_class.name} {float(confidence):.2f}"


def _font(height: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(11, height // 40))
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _tag_text(draw: ImageDraw.ImageDraw, font, text: str, corner, colour, size) -> None:
    """``text`` on a box of ``colour`` just above ``corner`` (inside the image), black or white
    to contrast."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = min(max(0, corner[0]), max(0, size[0] - w))
    y = corner[1] - h if corner[1] - h >= 0 else corner[1]
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
    draw.text((x + 2 - left, y + 2 - top), text, fill=ink, font=font)


def _with_band(canvas: Image.Image, text: str, font) -> Image.Image:
    probe = ImageDraw.Draw(canvas)
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    band = bottom - top + 8
    out = Image.new("RGB", (canvas.width, canvas.height + band), (255, 255, 255))
    out.paste(canvas, (0, band))
    ImageDraw.Draw(out).text((4 - left, 4 - top), text, fill=(0, 0, 0), font=font)
    return out


class DrawnAnnotation(sly.Annotation):
    """A ``sly.Annotation`` whose ``draw_pretty`` is :func:`draw_annotation` (what the SDK's CLI
    ``predict --draw`` calls). ``bitmap`` is drawn in place where the size allows (no caption
    band) and the full drawing is written to ``output_path``."""

    @classmethod
    def of(cls, ann: sly.Annotation) -> DrawnAnnotation:
        return cls(
            ann.img_size,
            ann.labels,
            ann.img_tags,
            ann.img_description,
            ann.pixelwise_scores_labels,
            ann.custom_data,
            ann.image_id,
        )

    def draw_pretty(
        self,
        bitmap: np.ndarray,
        color=None,
        thickness=None,
        opacity=0.5,
        draw_tags=False,
        output_path: str | None = None,
        fill_rectangles=True,
    ) -> None:
        drawn = draw_annotation(bitmap, self)
        if drawn.shape == bitmap.shape:
            bitmap[...] = drawn
        if output_path:
            sly.image.write(output_path, drawn)
