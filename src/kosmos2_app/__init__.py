"""Supervisely serving adapter for Kosmos-2 (the only package here that imports supervisely)."""

from .model import Kosmos2

__all__ = ["Kosmos2"]
