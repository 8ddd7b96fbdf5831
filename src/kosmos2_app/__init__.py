"""Supervisely serving adapter for Kosmos-2 (the only package here that imports supervisely)."""

from .local_env import load_local_env
from .model import Kosmos2

__all__ = ["Kosmos2", "load_local_env"]
