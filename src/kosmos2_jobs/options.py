"""What the commands (``src/label.py``, ``src/evaluate.py``) share: options given as JSON or
YAML text or as a file, and the weights and backend they load when not told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_TEXT_FILES = (".json", ".yaml", ".yml")


def mapping_option(text: str, option: str, must: str) -> dict[str, Any]:
    """``text`` (JSON or YAML, or the path of a ``.json`` / ``.yaml`` / ``.yml`` file) as a
    mapping (``{}`` when empty); otherwise ``ValueError``: "``option`` must ``must``"."""
    path = Path(text)
    if path.suffix.lower() in _TEXT_FILES and path.is_file():
        text = path.read_text(encoding="utf-8")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{option} is neither JSON nor YAML: {error}") from error
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{option} must {must}")
    return value


def engine_choice(checkpoint: str | None, backend: str | None) -> tuple[str, str]:
    """The (checkpoint, backend) a command loads: what its options say, else
    ``KOSMOS2_CHECKPOINT`` / ``KOSMOS2_BACKEND``, else the first ``models.json`` row on PyTorch."""
    from kosmos2_app import PYTORCH, backend_override, checkpoint_override, default_checkpoint

    return (
        checkpoint or checkpoint_override() or default_checkpoint(),
        backend or backend_override() or PYTORCH,
    )
