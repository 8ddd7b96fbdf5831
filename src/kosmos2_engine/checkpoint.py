"""Find and load a Kosmos-2 checkpoint: a local folder or a hub id such as
``microsoft/kosmos-2-patch14-224``.

Order: a local folder is loaded as it is; a hub id is loaded from the local hub cache if it is
there; otherwise it is downloaded (transformers shows progress bars), after a quick check that
the hub can be reached at all. Every failure raises :class:`CheckpointError` with a message
that says what to set.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

from .hf_types import Kosmos2Model

logger = logging.getLogger(__name__)

CHECKPOINT_ENV = "KOSMOS2_CHECKPOINT"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PROBE_TIMEOUT_S = 5.0


class CheckpointError(RuntimeError):
    """The checkpoint cannot be found or loaded; the message says what to do."""


def load_checkpoint(checkpoint: str, dtype: torch.dtype) -> tuple[Kosmos2Model, Any]:
    """Load ``(model, processor)`` from a folder or hub id; the model is on CPU, in eval mode."""
    if os.path.isdir(checkpoint):
        return _load(checkpoint, dtype, local_files_only=True)
    if not _HUB_ID.match(checkpoint):
        raise CheckpointError(
            f"Kosmos-2 checkpoint folder '{checkpoint}' does not exist. Set {CHECKPOINT_ENV} to a "
            "folder holding config.json, the model weights and the processor files, or to a hub "
            "id such as 'microsoft/kosmos-2-patch14-224'."
        )
    try:
        return _load(checkpoint, dtype, local_files_only=True)
    except OSError:
        logger.info("Kosmos-2 weights '%s' are not in the local cache.", checkpoint)
    _require_hub(checkpoint)
    logger.info("Downloading Kosmos-2 weights '%s' from the hub (about 6.7 GB).", checkpoint)
    try:
        return _load(checkpoint, dtype, local_files_only=False)
    except OSError as error:
        raise CheckpointError(_offline_message(checkpoint, str(error))) from error


def _load(source: str, dtype: torch.dtype, local_files_only: bool):
    """Raises CheckpointError for a bad folder or repository, OSError when files are missing
    from the hub cache (the caller then downloads)."""
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
        model = Kosmos2ForConditionalGeneration.from_pretrained(
            source, dtype=dtype, attn_implementation="sdpa", local_files_only=local_files_only
        )
    except (OSError, ValueError, KeyError) as error:
        if os.path.isdir(source):
            raise CheckpointError(
                f"'{source}' is not a complete Kosmos-2 checkpoint folder (it needs config.json, "
                f"the weights and the processor files): {error}"
            ) from error
        if isinstance(error, OSError):
            raise
        raise CheckpointError(f"'{source}' is not a valid Kosmos-2 checkpoint: {error}") from error
    return model.eval(), processor


def _require_hub(checkpoint: str) -> None:
    """Fail at once, with what to set, when the hub is disabled or unreachable (the hub client
    itself would retry for minutes). ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are read as the hub
    client reads them, from its parsed constants, so this check and the download agree."""
    if hub_constants.HF_HUB_OFFLINE:
        raise CheckpointError(_offline_message(checkpoint, "HF_HUB_OFFLINE is set"))
    endpoint = urlparse(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
    except OSError as error:
        reason = f"cannot reach {endpoint.hostname}:{port} ({error})"
        raise CheckpointError(_offline_message(checkpoint, reason)) from error


def _offline_message(checkpoint: str, reason: str) -> str:
    return (
        f"Kosmos-2 weights '{checkpoint}' are not on this machine and cannot be downloaded: "
        f"{reason}. Set {CHECKPOINT_ENV} to a local folder with the weights (for example one "
        "made by docker/download_weights.py), or give this machine access to the Hugging Face "
        "hub (HF_ENDPOINT may point at a mirror)."
    )
