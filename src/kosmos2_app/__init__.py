"""Supervisely serving adapter for Kosmos-2 (the only package here that imports supervisely).

Importing the package imports nothing: ``kosmos2_app.config`` must be importable before
``cv2`` is (see :func:`kosmos2_app.config.limit_opencv_decoding`). ``Kosmos2`` and
``load_local_env`` are loaded on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {"Kosmos2": ".model", "load_local_env": ".local_env"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
