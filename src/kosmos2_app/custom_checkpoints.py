"""Fine-tuned checkpoints from Team Files: what a deploy with ``model_source`` ``"Custom models"``
or ``"External models"`` (the serving GUI's "Models from other sources" tab, or
``deploy_from_api``) names in ``model_files.checkpoint`` is a Team Files folder, fetched by
:func:`supervisely_io.team_files.fetch_checkpoint` into the app's cache and remembered here, so
that the load accepts it and ``/get_deploy_info`` names where it came from.

Errors map to HTTP: a refused path or folder is a 400 naming ``model_files.checkpoint``; an API
that cannot be reached or answers with an error is a 502 (the platform's side, not the
client's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import supervisely as sly
from fastapi import HTTPException, status

from supervisely_io.sources import default_api_factory
from supervisely_io.team_files import CheckpointRefused, checked_folder, fetch_checkpoint

from .config import team_id
from .http.errors import bad_request

FIELD = "deploy_params.model_files.checkpoint"
PYTORCH_ONLY = (
    "a checkpoint from Team Files is served by the PyTorch row (export one for OpenVINO with "
    "make export-openvino CHECKPOINT=<folder> and set KOSMOS2_CHECKPOINT to it)"
)
API_RETRIES = 3  # a deploy waits for an unreachable API a few seconds, not minutes

logger = logging.getLogger(__name__)


class TeamFilesCheckpoints:
    """The checkpoints this server fetched from Team Files: local folder -> Team Files folder."""

    def __init__(self, cache_root: Callable[[], Path]):
        self.cache_root = cache_root  # where fetched folders are kept (asked at each fetch)
        self._origins: dict[str, str] = {}

    def fetch(self, model_files: Any) -> dict[str, str]:
        """``{"checkpoint": local folder}`` for the Team Files folder ``model_files["checkpoint"]``,
        downloaded with a progress bar unless cached; 400 / 502 as the module says."""
        try:
            folder = checked_folder((model_files or {}).get("checkpoint") if isinstance(model_files, dict) else None,
                                    FIELD)  # fmt: skip
        except CheckpointRefused as error:
            raise bad_request(str(error)) from None
        team = team_id()
        if team is None:
            raise bad_request(f"{FIELD}: Team Files need the team: TEAM_ID is not set on the server")
        try:
            with sly.tqdm_sly(desc=f"Team Files {folder}", unit="B", unit_scale=True) as bar:
                local = fetch_checkpoint(default_api_factory(API_RETRIES), team, folder, self.cache_root(), bar.update)
        except CheckpointRefused as error:
            raise bad_request(f"{FIELD}: {error}") from None
        except (requests.RequestException, OSError) as error:
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY,
                detail=f"{FIELD}: Team Files could not be read through the Supervisely API ({type(error).__name__})",
            ) from None
        self._origins[str(local)] = folder
        logger.info("Checkpoint %s from Team Files is in %s", folder, local)
        return {"checkpoint": str(local)}

    def origin(self, checkpoint: str) -> str | None:
        """The Team Files folder that local ``checkpoint`` came from, None for any other."""
        return self._origins.get(checkpoint)
