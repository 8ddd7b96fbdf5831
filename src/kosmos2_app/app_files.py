"""The app's own files under ``src/``: the model table, the app options and the default
inference settings, read here for the server and the labelling job alike."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml

SRC_DIR = Path(__file__).resolve().parent.parent
MODELS = SRC_DIR / "models.json"
APP_OPTIONS = SRC_DIR / "app_options.yaml"
INFERENCE_SETTINGS = SRC_DIR / "inference_settings.yaml"


@functools.cache
def _default_settings() -> dict[str, Any]:
    return yaml.safe_load(INFERENCE_SETTINGS.read_text()) or {}


def default_settings() -> dict[str, Any]:
    """The settings a request does not send: ``inference_settings.yaml``, parsed once (a copy)."""
    return dict(_default_settings())


def settings_policy(settings: dict[str, Any]):
    """The :class:`~kosmos2_engine.GenerationPolicy` of ``settings`` over these defaults;
    ``SettingsError`` naming the field when one is wrong."""
    from kosmos2_engine import policy_from_settings

    return policy_from_settings(settings, default_settings())


def model_rows() -> list[dict[str, Any]]:
    """The rows of ``models.json``, the first being the default model."""
    return json.loads(MODELS.read_text())


def default_checkpoint() -> str:
    """The first row's checkpoint (a hub id): what loads when nothing else is named."""
    return model_rows()[0]["meta"]["model_files"]["checkpoint"]
