"""``POST /deploy_from_api``, transactional: the model that serves keeps serving until another
is loaded and warmed up, and a refused or failed deploy changes nothing.

The SDK's handler shut the running model down first, so any refused request (an unknown model
name, ``cuda:7``, a checkpoint outside ``models.json``) left ``/is_ready`` at 503 until someone
deployed again, and several of those were 500s. Here the whole request is checked first (400s
that name the field and what is allowed), then the SDK's own deploy steps run without the
shut-down (:func:`~kosmos2_app.sdk_seam.deploy_listed_model`); ``load_model`` swaps engines only once
the new one is warm, and a failure restores what the SDK had recorded.

Request (what ``ModelAPI.load`` and ``api.nn`` send)::

    {"state": {"model_name": "Kosmos-2",
               "deploy_params": {"model_source": "Pretrained models", "device": "cpu",
                                 "runtime": "PyTorch", "classes": ["car", "person"]}}}

A fine-tuned checkpoint from Team Files: ``"model_source": "Custom models"`` (or ``"External
models"``, as the serving GUI sends it) and ``"model_files": {"checkpoint": "/team/files/folder/"}``;
``model_name`` may be left out (the PyTorch row). See :mod:`~kosmos2_app.custom_checkpoints`.

``classes`` (optional): the classes this deploy declares, as :class:`~kosmos2_app.ontology.Ontology`
reads them (names, or ``{"name": "phrase"}``); without it the operator's (``KOSMOS2_CLASSES``,
else COCO's 80) stay.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse

from kosmos2_engine import SettingsError, available_devices, check_device, default_device
from supervisely_io.team_files import CheckpointRefused, checked_folder

from .. import sdk_seam as sdk
from ..custom_checkpoints import FIELD as TEAM_FILES_FIELD
from ..custom_checkpoints import PYTORCH_ONLY
from ..engines import PYTORCH, backend_of, check_backend_device
from ..http.errors import bad_request
from ..ontology import Ontology

PRETRAINED = "Pretrained models"
PYTORCH_RUNTIME = "PyTorch"


@dataclass(frozen=True)
class DeployPlan:
    """A checked deploy request: a row of ``models.json``, a device of this machine."""

    model_name: str
    device: str
    runtime: str
    ontology: Ontology | None = None  # the classes the deploy declares, if it names them
    team_files: str | None = None  # a fine-tuned checkpoint's Team Files folder, served instead of the row's weights


def plan_deploy(state, rows: list[dict]) -> DeployPlan:
    """Check a deploy request's state against the model table; ``HTTPException(400)`` naming
    the field and what is allowed."""
    if not isinstance(state, dict) or not isinstance(state.get("deploy_params"), dict):
        raise bad_request(
            'deploy_params: required, an object such as {"model_source": "Pretrained models", "device": "cpu"}'
        )
    params = state["deploy_params"]
    source = params.get("model_source", PRETRAINED)
    if source not in (PRETRAINED, *sdk.TEAM_FILES_SOURCES):
        raise bad_request(
            f"deploy_params.model_source: one of {[PRETRAINED, *sdk.TEAM_FILES_SOURCES]} (the last two: a "
            f"checkpoint folder in Team Files), got {source!r}"
        )
    team_files = _team_files_folder(params.get("model_files")) if source != PRETRAINED else None
    names = {row["meta"]["model_name"].lower(): row for row in rows}
    name = state.get("model_name") or ((params.get("model_info") or {}).get("meta") or {}).get("model_name")
    if team_files is not None and name is None:
        name = next(r["meta"]["model_name"] for r in rows if backend_of(r) == PYTORCH)
    row = names.get(name.lower()) if isinstance(name, str) else None
    if row is None:
        raise bad_request(f"model_name: must be one of {[r['meta']['model_name'] for r in rows]}, got {name!r}")
    if team_files is not None and backend_of(row) != PYTORCH:
        raise bad_request(f"model_name: {PYTORCH_ONLY}, not '{name}'")
    files = params.get("model_files")
    if team_files is None and files and files != row["meta"]["model_files"]:
        listed = sorted({r["meta"]["model_files"]["checkpoint"] for r in rows})
        raise bad_request(
            f"model_files.checkpoint must be one of this app's models {listed}, got "
            f"{(files or {}).get('checkpoint') if isinstance(files, dict) else files!r}. To serve "
            "another folder or hub id, set KOSMOS2_CHECKPOINT on the server."
        )
    device = params.get("device") or default_device()
    if not isinstance(device, str):
        raise bad_request(f"deploy_params.device: expected a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        check_backend_device(backend_of(row), device)
        check_device(device)
    except ValueError as error:
        raise bad_request(
            f"deploy_params.device: {error} This machine has: {', '.join(available_devices())}."
        ) from None
    runtime = params.get("runtime") or PYTORCH_RUNTIME
    if not isinstance(runtime, str) or runtime.lower() != PYTORCH_RUNTIME.lower():
        raise bad_request(
            f"deploy_params.runtime: must be '{PYTORCH_RUNTIME}' (the OpenVINO variants are rows "
            f"of the model table), got {runtime!r}"
        )
    return DeployPlan(row["meta"]["model_name"], device, PYTORCH_RUNTIME, _declared(params.get("classes")), team_files)


def _team_files_folder(files) -> str:
    checkpoint = files.get("checkpoint") if isinstance(files, dict) else None
    try:
        return checked_folder(checkpoint, TEAM_FILES_FIELD)
    except CheckpointRefused as error:
        raise bad_request(str(error)) from None


def _declared(classes) -> Ontology | None:
    if classes is None:
        return None
    try:
        return Ontology.parse(classes, "deploy_params.classes")
    except SettingsError as error:
        raise bad_request(str(error)) from None


class DeployRoute:
    """``/deploy_from_api`` for ``model``; one deploy at a time."""

    def __init__(self, model):
        self.model = model
        self._one_at_a_time = threading.Lock()

    def register(self, server) -> None:
        sdk.replace_route(server, "/deploy_from_api", self.deploy_from_api)

    async def deploy_from_api(self, request: Request) -> JSONResponse:
        plan = plan_deploy(request.state.state, self.model.pretrained_models)
        await anyio.to_thread.run_sync(self.deploy, plan)
        return JSONResponse({"result": "model was successfully deployed"})

    def deploy(self, plan: DeployPlan) -> None:
        """Deploy ``plan``; the model that serves is replaced only when this succeeds."""
        with self._one_at_a_time:
            try:
                params = sdk.deploy_listed_model(
                    self.model, plan.model_name, plan.device, plan.runtime, plan.team_files
                )
                if plan.ontology is not None:
                    self.model.declare_classes(plan.ontology)
                if self.model.gui is not None:
                    self.model.set_params_to_gui(params)
                    self.model.gui.set_deployed(plan.device)
            finally:
                sdk.restart_idle_freeze_timer(self.model)
