"""The one place that touches private names of the Supervisely SDK (pinned: 6.74.51).

The SDK has no public hook for several things this app must do, so it overrides or calls a
few private methods and reads a few private attributes. All of them are here, each with the
reason, and :func:`check_sdk` verifies at import that the installed SDK still has every one:
an upgrade that renames one fails at start-up with the name, instead of quietly binding
0.0.0.0, dropping image tags or turning requests into 500s.

:class:`SdkHooks` is a mixin for the app's ``Inference`` subclass: it overrides the private
hooks and forwards each to a public method of the app (``make_annotation``,
``infer_in_chunks``, ``run_server``), so that the rest of the app never names a private SDK
method.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import HTTPException, status
from supervisely.app.content import DataJson
from supervisely.app.fastapi.subapp import SUPERVISELY_SERVER_PATH_PREFIX
from supervisely.nn.inference import Inference
from supervisely.nn.inference.inference_request import InferenceRequest, InferenceRequestsManager

TEAM_FILES_SOURCES = ("Custom models", "External models")  # deploys whose checkpoint is in Team Files

# Private methods the app overrides (hooks) or calls, by class, each with why.
PRIVATE_METHODS: dict[type, dict[str, str]] = {
    Inference: {
        "_predictions_to_annotation": "annotations built as the labelling job builds them (classes, text tags)",
        "_inference_batched_wrapper": "the SDK's routes and jobs enter the app's one inference path",
        "_run_server": "CLI deploy binds loopback, with the app's routes in place",
        "_run_server_in_thread": "quick deploy: the same, in a thread",
        "_load_model_headless": "a failed deploy restores what the SDK had recorded",
        "_inference_images": "the SDK's own image inference, on images decoded in memory",
        "_build_deploy_params_from_api": "deploy: a model row's files and info",
        "_download_model_files": "deploy: resolve the row's checkpoint; Team Files checkpoints fetched by the app",
        "_set_common_deploy_params": "deploy: default device and runtime",
        "_schedule_freeze_on_inactivity": "restart the idle-freeze timer (after a deploy, or activity)",
        "_unfreeze_model": "the app's own inference path wakes a frozen model as the SDK's does",
    },
}
# Private attributes the SDK assigns in its own code (checked in its source).
PRIVATE_ATTRIBUTES: dict[type, dict[str, str]] = {
    Inference: {
        "_model_meta": "the open-vocabulary model meta, created in load_model",
        "_model_served": "whether a model serves (restored after a failed deploy)",
        "_deploy_params": "the last deploy (restored after a failed deploy)",
        "_hardware": "hardware of the last deploy (restored after a failed deploy)",
        "_executor": "the thread pool the request manager runs inference on",
        "_app": "the Application whose server gets the app's routes",
        "_model_frozen": "whether the idle freeze moved the weights to CPU",
    },
    InferenceRequestsManager: {
        "_inference_requests": "listing finished requests (no public listing exists)",
        "_lock": "the lock that guards that table",
    },
}
# What a deploy changes on the model object, restored when a deploy fails.
DEPLOYMENT_FIELDS = (
    "model_source",
    "device",
    "runtime",
    "model_precision",
    "checkpoint_info",
    "max_batch_size",
    "_hardware",
    "_model_served",
    "_deploy_params",
)


class SdkChangedError(ImportError):
    """The installed SDK lacks a private name this app relies on."""


def check_sdk() -> None:
    """Raise :class:`SdkChangedError` naming every private method or attribute that the
    installed SDK no longer has."""
    missing = [
        f"{cls.__name__}.{name} ({why})"
        for cls, names in PRIVATE_METHODS.items()
        for name, why in names.items()
        if not callable(getattr(cls, name, None))
    ]
    for cls, names in PRIVATE_ATTRIBUTES.items():
        # The text of the class's module, read as a file: inspect.getsource parses it with ast,
        # which in CPython 3.11.7 can fail ("AST constructor recursion depth mismatch") while
        # another thread compiles a module (a first import, with no .pyc yet).
        source = Path(inspect.getsourcefile(cls) or "").read_text()
        missing += [
            f"{cls.__name__}.{name} ({why})"
            for name, why in names.items()
            if f"self.{name} =" not in source and f"self.{name}:" not in source
        ]
    if missing:
        raise SdkChangedError(
            "The installed Supervisely SDK lacks what serve-kosmos-2 relies on "
            "(pinned: supervisely==6.74.51): " + "; ".join(missing)
        )


check_sdk()


class SdkHooks:
    """Overrides of the SDK's private hooks, each forwarding to a public method of the app."""

    def _predictions_to_annotation(self, image_path, predictions, classes_whitelist=None):
        return self.make_annotation(image_path, predictions, classes_whitelist)

    def _inference_batched_wrapper(self, source, settings):
        return self.infer_in_chunks(source, settings)

    def _run_server(self):
        self.run_server()

    def _run_server_in_thread(self):
        self._server_thread = threading.Thread(target=self.run_server, daemon=True)
        self._server_thread.start()

    def _download_model_files(self, deploy_params, log_progress=True):
        """A checkpoint from Team Files (the GUI's "Models from other sources", a deploy's
        ``Custom models`` / ``External models``) is fetched, checked and cached by the app; the
        SDK would download any file it is told to and unpickle it."""
        if deploy_params.get("model_source") in TEAM_FILES_SOURCES:
            return self.fetch_team_files_checkpoint(deploy_params.get("model_files"))
        return super()._download_model_files(deploy_params, log_progress)

    def _load_model_headless(self, **deploy_params):
        """Every deploy path (the GUI's Serve, ``/deploy_from_api``, CLI, auto-restart): when
        it fails, what the SDK recorded about the deploy is restored, so that the model that
        was serving keeps serving and says so (``load_model`` swaps engines only on success)."""
        saved = deployment_state(self)
        try:
            return super()._load_model_headless(**deploy_params)
        except BaseException:
            restore_deployment_state(self, saved)
            raise


def model_meta(model):
    """The meta as built so far (None before the first deploy)."""
    return model._model_meta


def set_model_meta(model, meta) -> None:
    model._model_meta = meta


def server_of(model):
    """The FastAPI server of the model's Application (after ``serve()``)."""
    return model._app.get_server()


def deployment_state(model) -> dict[str, Any]:
    return {name: getattr(model, name, None) for name in DEPLOYMENT_FIELDS}


def restore_deployment_state(model, saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        setattr(model, name, value)


def deploy_listed_model(model, model_name: str, device: str, runtime: str, team_files: str | None = None) -> dict:
    """What the SDK's ``/deploy_from_api`` does for a pretrained row, without first shutting
    down the model that serves: the row's files, the common defaults, the headless load; with
    ``team_files``, that Team Files folder's checkpoint instead of the row's weights (an
    ``External models`` deploy, as the serving GUI makes one). Returns the deploy params."""
    params = model._build_deploy_params_from_api(
        model_name, {"model_source": "Pretrained models", "device": device, "runtime": runtime}
    )
    if team_files is not None:
        params.update(model_source="External models", model_files={"checkpoint": team_files})
    params["model_files"] = model._download_model_files(params)
    params = model._set_common_deploy_params(params)
    model._load_model_headless(**params)
    return params


def restart_idle_freeze_timer(model) -> None:
    model._schedule_freeze_on_inactivity()


def is_frozen(model) -> bool:
    """Whether the SDK's idle freeze moved the model to CPU (the next inference wakes it)."""
    return bool(getattr(model, "_model_frozen", False))


def wake_up(model) -> None:
    """The SDK's wake-up after the idle freeze: the model back on its deploy device."""
    model._unfreeze_model()


def infer_images(model, images: list, state: dict, inference_request: InferenceRequest) -> None:
    """The SDK's image inference (settings merged with defaults, batches, results in the SDK's
    format added to ``inference_request``), on RGB arrays already decoded. The request
    manager's ``run`` / ``schedule_task`` pass ``inference_request`` by keyword."""
    model._inference_images(images, state, inference_request=inference_request)


def finished_requests(manager: InferenceRequestsManager) -> list[InferenceRequest]:
    """Every request in the manager's table that has finished (a copy, taken under its lock)."""
    with manager._lock:
        requests = list(manager._inference_requests.values())
    return [request for request in requests if request.is_finished()]


class UnguessableRequestsManager(InferenceRequestsManager):
    """The SDK's request manager with random request ids, and a 404 for an unknown one. The
    SDK derives an id from the clock (``uuid5`` of ``time.time()``): two requests created in
    the same tick get the same id and overwrite each other's entry, and any caller can guess
    another's id. It answered an unknown id with a 500."""

    def create(self, inference_request_uuid: str | None = None) -> InferenceRequest:
        return super().create(inference_request_uuid or uuid.uuid4().hex)

    def get(self, inference_request_uuid: str):
        if inference_request_uuid is not None and inference_request_uuid not in self._inference_requests:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=(
                    "inference_request_uuid: no such request here (a finished request is kept for 60 s "
                    "after its results were taken)"
                ),
            )
        return super().get(inference_request_uuid)


def use_unguessable_request_ids(model) -> None:
    """Give ``model`` an :class:`UnguessableRequestsManager` on the SDK's executor."""
    model.inference_requests_manager = UnguessableRequestsManager(model._executor)


# The SDK's BoT-SORT numbers tracks from one counter of its class (``BaseTrack._count``), reset
# by every new tracker: two requests tracking at once would renumber each other's tracks. Each
# tracker here keeps its own count, swapped in under a lock around every call into BoT-SORT.
# Checked when the tracker is first imported (importing it takes seconds; only tracking needs it).
TRACKER_PRIVATE = {"BaseTrack._count": "each request's tracker numbers its own tracks"}
_TRACK_COUNTER = threading.Lock()


def new_botsort(settings: dict[str, Any], device: str, counter: Any) -> Any:
    """The SDK's BoT-SORT tracker with ``settings`` on ``device``; ``counter.track_count``
    holds its own track numbering (see :func:`own_track_count`)."""
    from supervisely.nn.tracker import BotSortTracker

    with own_track_count(counter):
        return BotSortTracker(settings=settings, device=device)


@contextlib.contextmanager
def own_track_count(counter: Any):
    """BoT-SORT's process-wide track counter set to ``counter.track_count`` for the block, and
    read back after it, with no other tracker in between."""
    from supervisely.nn.tracker.botsort.tracker.basetrack import BaseTrack

    if not isinstance(getattr(BaseTrack, "_count", None), int):
        raise SdkChangedError(
            "The installed Supervisely SDK lacks what serve-kosmos-2 relies on (pinned: supervisely==6.74.51): "
            + "; ".join(f"{name} ({why})" for name, why in TRACKER_PRIVATE.items())
        )
    with _TRACK_COUNTER:
        BaseTrack._count = counter.track_count
        try:
            yield
        finally:
            counter.track_count = BaseTrack._count


def is_widget_callback(path: str) -> bool:
    """``/<widget id>/<route>`` of a GUI widget (the Serve and Stop buttons, the model table):
    the SDK registers them in ``DataJson()[widget_id]["widget_routes"]``."""
    parts = path.strip("/").split("/")
    if len(parts) != 2:
        return False
    widget = DataJson().get(parts[0])
    return isinstance(widget, dict) and parts[1] in (widget.get("widget_routes") or {})


def replace_route(server, path: str, endpoint: Callable, methods=("POST",)) -> None:
    """Serve ``path`` with ``endpoint`` (``async def endpoint(request: Request) -> Response``)
    instead of whatever the SDK registered there (also under the SDK's path prefix)."""
    paths = {path, (SUPERVISELY_SERVER_PATH_PREFIX or "") + path}
    server.router.routes[:] = [r for r in server.router.routes if getattr(r, "path", None) not in paths]
    server.add_api_route(path, endpoint, methods=list(methods))
