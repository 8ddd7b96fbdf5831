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

from .predictions import CONFIDENCE_TAG, DESCRIPTION_TAG, TEXT_TAGS

MASK_OPACITY = 0.45


def draw_annotation(image: np.ndarray, ann: sly.Annotation) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with every mask of ``ann`` filled translucent and every
    rectangle outlined, in its class colour, each labelled "phrase 0.83" (its confidence) or
    "phrase: description", labels kept clear of each other, and the annotation's caption /
    answer in a band above the image, wrapped to its width. Returns a new (H', W, 3) array."""
    font = font_for(image.shape[0])
    bitmaps = [label for label in ann.labels if isinstance(label.geometry, sly.Bitmap)]
    pixels = np.array(image[..., :3], dtype=np.uint8) if bitmaps else np.ascontiguousarray(image[..., :3])
    for label in bitmaps:
        _fill(pixels, label.geometry, label.obj_class.color)
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(min(image.shape[:2]) / 200))
    rectangles = [label for label in ann.labels if isinstance(label.geometry, sly.Rectangle)]
    for label in rectangles:
        box = label.geometry
        draw.rectangle((box.left, box.top, box.right, box.bottom), outline=tuple(label.obj_class.color), width=width)
    placed: list[tuple[int, int, int, int]] = []
    for label in [*rectangles, *bitmaps]:
        box = label.geometry.to_bbox()
        placed.append(_tag_text(draw, font, _label_text(label), (box.left, box.top), tuple(label.obj_class.color),
                                canvas.size, placed))  # fmt: skip
    text = " | ".join(f"{tag.name}: {tag.value}" for tag in ann.img_tags if tag.name in TEXT_TAGS and tag.value)
    return np.asarray(_with_band(canvas, text, font) if text else canvas)


def _fill(pixels: np.ndarray, bitmap: sly.Bitmap, colour) -> None:
    """Blend ``colour`` over the pixels of ``bitmap`` (its origin is its top-left pixel), in place."""
    top, left = bitmap.origin.row, bitmap.origin.col
    mask = bitmap.data[: pixels.shape[0] - top, : pixels.shape[1] - left]
    region = pixels[top : top + mask.shape[0], left : left + mask.shape[1]]
    blended = (1 - MASK_OPACITY) * region[mask] + MASK_OPACITY * np.asarray(colour, dtype=np.float32)
    region[mask] = blended.round().astype(np.uint8)


def _label_text(label: sly.Label) -> str:
    tags = {tag.name: tag.value for tag in label.tags}
    if tags.get(DESCRIPTION_TAG):
        return f"{label.obj_class.name}: {tags[DESCRIPTION_TAG]}"
    confidence = tags.get(CONFIDENCE_TAG)
    return label.obj_class.name if confidence is None else f"{label.obj_class.name} {float(confidence):.2f}"


def font_for(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(11, height // 40))
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _tag_text(draw: ImageDraw.ImageDraw, font, text: str, corner, colour, size, placed) -> tuple[int, int, int, int]:
    """``text`` on a box of ``colour`` just above ``corner`` (inside the image), moved down
    past any label already ``placed`` that it would cover; black or white to contrast.
    Returns where it went (x0, y0, x1, y1)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = min(max(0, corner[0]), max(0, size[0] - w))
    y = corner[1] - h if corner[1] - h >= 0 else corner[1]
    moved = True
    while moved:
        moved = False
        for x0, y0, x1, y1 in placed:
            if x < x1 and x0 < x + w and y < y1 and y0 < y + h:  # overlap: go below that label
                y, moved = y1 + 1, True
    y = min(y, max(0, size[1] - h))
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
    draw.text((x + 2 - left, y + 2 - top), text, fill=ink, font=font)
    return x, y, x + w, y + h


def wrapped(text: str, font, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels (a word longer than that gets a line of its own)."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and probe.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _with_band(canvas: Image.Image, text: str, font) -> Image.Image:
    """``canvas`` under a white band holding ``text``, wrapped to the canvas width."""
    lines = wrapped(text, font, canvas.width - 8)
    left, top, _, bottom = ImageDraw.Draw(canvas).textbbox((0, 0), "Ag", font=font)
    line_height = bottom - top + 4
    band = line_height * len(lines) + 6
    band = int(band)
    out = Image.new("RGB", (canvas.width, canvas.height + band), (255, 255, 255))
    out.paste(canvas, (0, band))
    draw = ImageDraw.Draw(out)
    for index, line in enumerate(lines):
        draw.text((4 - left, 4 - top + index * line_height), line, fill=(0, 0, 0), font=font)
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
