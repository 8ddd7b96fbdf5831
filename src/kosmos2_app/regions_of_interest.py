"""Regions of interest: a request may ask for part of each image only, as the SDK's clients
send it (``settings.rectangle``, one Supervisely rectangle JSON for every image, or
``settings.rectangles``, one per image; also ``state.rectangle``). The model sees the crop; its
boxes (and the regions a ``region_description`` request names, which are in the crop's pixels)
are shifted back into the whole image, whose size the annotation keeps, as the SDK's own ROI
path does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervisely as sly

from .http.errors import bad_request

ROI_SETTINGS = ("rectangle", "rectangles")


@dataclass(frozen=True)
class Crop:
    """Inclusive pixel rows ``top..bottom`` and columns ``left..right`` of an image."""

    top: int
    left: int
    bottom: int
    right: int

    def of(self, image: np.ndarray) -> np.ndarray:
        """The crop of an (H, W, C) image; a 400 when it does not lie inside the image."""
        try:
            return sly.image.crop(image, sly.Rectangle(self.top, self.left, self.bottom, self.right))
        except ValueError as error:
            raise bad_request(
                f"rectangle: [{self.top}, {self.left}, {self.bottom}, {self.right}] (top, left, bottom, right) "
                f"does not lie inside the {image.shape[1]}x{image.shape[0]} image ({error})"
            ) from None


def crops_of(settings: Mapping[str, Any], count: int) -> list[Crop] | None:
    """One :class:`Crop` per image of a request with ``count`` images, or None for whole images."""
    if settings.get("rectangles") is not None:
        rectangles = settings["rectangles"]
        if not isinstance(rectangles, list) or len(rectangles) != count:
            raise bad_request(f"rectangles: expected a list of {count} rectangles, one per image")
        return [_crop("rectangles", rectangle) for rectangle in rectangles]
    if settings.get("rectangle") is not None:
        return [_crop("rectangle", settings["rectangle"])] * count
    return None


def cropped(images: Sequence[np.ndarray], crops: Sequence[Crop] | None) -> list[np.ndarray]:
    """The images the model sees: each cropped to its region, or whole."""
    return list(images) if crops is None else [crop.of(image) for image, crop in zip(images, crops)]


def _crop(field: str, rectangle: Any) -> Crop:
    try:
        box = sly.Rectangle.from_json(rectangle)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise bad_request(
            f'{field}: expected a Supervisely rectangle such as {{"points": {{"exterior": [[left, top], '
            f'[right, bottom]], "interior": []}}}} ({type(error).__name__})'
        ) from None
    return Crop(box.top, box.left, box.bottom, box.right)
