"""Kosmos-2 as a Supervisely serving app: the adapter between the SDK and :mod:`kosmos2_engine`.

How a request travels, by folder: :mod:`.http` (the front door: key, control routes, bodies,
one error shape, metrics) → :mod:`.routes` (the SDK's image, deploy and task routes, served by
the app) → :class:`~.model.Kosmos2` (one inference path into the engine's batcher) →
:mod:`.results` (predictions, annotations, drawing).

The names below are the app's public surface: the jobs (:mod:`kosmos2_jobs`) use these and
nothing else. Importing the package imports nothing: :mod:`.config` must be importable before
``cv2`` is (see :func:`~.config.limit_opencv_decoding`); each name is loaded on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Kosmos2": ".model",
    "load_local_env": ".local_env",
    "AnnotationBuilder": ".results.annotations",
    "meta_with": ".results.annotations",
    "boxes_xyxy": ".results.annotations",
    "kept_boxes": ".results.annotations",
    "MaskOptions": ".masks",
    "sam2_encoder_of": ".masks",
    "sam2_checkpoint": ".config",
    "draw_annotation": ".results.drawing",
    "DescribedRegion": ".results.predictions",
    "result_to_predictions": ".results.predictions",
    "settings_policy": ".app_files",
    "default_checkpoint": ".app_files",
    "load_warm_engine": ".engines",
    "PYTORCH": ".engines",
    "backend_override": ".config",
    "checkpoint_override": ".config",
    "max_image_pixels": ".config",
    "supervisely_env": ".config",
    "ray_address": ".config",
    "team_id": ".config",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
