"""Kosmos-2 as a Supervisely serving app: a thin adapter over :mod:`kosmos2_engine`.

The SDK owns the HTTP server, the GUI, the CLI and the annotation format; this class loads the
engine, turns settings into a :class:`~kosmos2_engine.GenerationPolicy`, grounded phrases into
rectangles with a ``confidence`` tag, and text into ``caption`` / ``answer`` image tags and
``description`` label tags (also copied into each result's ``data``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import supervisely as sly
import uvicorn
from fastapi import HTTPException, status
from supervisely.nn.inference import ModelPrecision, RuntimeType
from supervisely.nn.prediction_dto import PredictionBBox

from kosmos2_engine import (
    CHECKPOINT_ENV,
    CheckpointError,
    Kosmos2Engine,
    RequestBatcher,
    SettingsError,
    policy_from_settings,
)

from decode_limits import max_image_pixels

from .drawing import DrawnAnnotation
from .engines import backend_of, load_engine
from .log_redaction import redact_tokens_in
from .options import ServingOptions, listen_address
from .request_janitor import FinishedRequestJanitor

from .predictions import (
    DESCRIPTION_TAG,
    TEXT_TAGS,
    DescribedRegion,
    ImageText,
    annotation_text,
    class_colour,
    result_to_predictions,
)
from .routes import register_body_check, register_image_error_handlers, register_task_routes

SRC_DIR = Path(__file__).resolve().parent.parent


class Kosmos2(sly.nn.inference.PromptBasedObjectDetection):
    """Every Kosmos-2 task (see ``inference_settings.yaml``): grounded phrases become rectangles
    of the class named by the phrase, text becomes ``caption`` / ``answer`` / ``description`` tags."""

    FRAMEWORK_NAME = "Kosmos-2"
    MODELS = str(SRC_DIR / "models.json")
    APP_OPTIONS = str(SRC_DIR / "app_options.yaml")
    INFERENCE_SETTINGS = str(SRC_DIR / "inference_settings.yaml")

    def __init__(self, *args, **kwargs):
        # Set before the SDK constructor: in CLI mode it deploys (calls load_model) inside it.
        self._engine: Kosmos2Engine | None = None
        self._batcher: RequestBatcher | None = None
        self._engine_key: tuple[str, str] | None = None
        self._meta_lock = threading.Lock()
        self._janitor: FinishedRequestJanitor | None = None
        self._extra_routes_registered = False
        # Images over this get a 400 (OpenCV's ceiling is set to it by src/main.py, see decode_limits).
        self.max_image_pixels = max_image_pixels()
        redact_tokens_in(sly.logger)  # before the SDK constructor logs anything
        super().__init__(*args, **kwargs)

    def load_model(self, model_files: dict, model_info: dict, model_source: str, device: str,
                   runtime: str = RuntimeType.PYTORCH, **kwargs) -> None:
        """Load Kosmos-2 on ``device`` and warm it up; safe to call again.

        :param model_files: ``{"checkpoint": hub id or local folder}``; the environment variable
            ``KOSMOS2_CHECKPOINT`` overrides it.
        :type model_files: dict
        :param device: ``cpu``, ``cuda`` or ``cuda:N``. GPU runs in bf16 (fp16 where bf16 is
            unsupported), CPU in fp32.
        :type device: str
        :param model_info: the ``models.json`` row; ``meta.backend`` picks the torch engine or an
            OpenVINO variant (CPU only; see :mod:`.engines`).
        :type model_info: dict
        :param runtime: only ``PyTorch``.
        :type runtime: str

        The SDK calls this again with ``device="cpu"`` after an hour idle and with the original
        device on the next request; the loaded weights are then moved, not reloaded.
        """
        if runtime != RuntimeType.PYTORCH:
            raise ValueError(f"Runtime '{runtime}' is not supported; use '{RuntimeType.PYTORCH}' "
                             "(the OpenVINO variants are rows of the model table).")
        checkpoint = self._listed_checkpoint(model_files)
        try:
            key = (os.environ.get(CHECKPOINT_ENV) or checkpoint, backend_of(model_info))
        except ValueError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(error)) from error
        options = ServingOptions.from_environment(device)
        if self._engine is not None and self._engine_key == key:
            self._engine.compile_decoder = options.compile_decoder
            self._engine.to(device)
        else:
            self._replace_engine(key, device, options)
        self._engine.max_batch_size = options.max_batch_size
        self._engine.warm_up()
        if self._batcher is None:  # one per engine: its worker thread lives as long as the engine
            self._batcher = RequestBatcher(self._engine)
        self._batcher.max_wait_s, self._batcher.max_images = options.batch_wait_s, options.max_batch_size
        self.model_precision = _precision_name(self._engine)
        self.classes = []
        with self._meta_lock:
            if self._model_meta is None:
                self._model_meta = sly.ProjectMeta()
            self._get_confidence_tag_meta()
            for name in TEXT_TAGS:
                if self._model_meta.get_tag_meta(name) is None:
                    meta = sly.TagMeta(name, sly.TagValueType.ANY_STRING)
                    self._model_meta = self._model_meta.add_tag_meta(meta)

    def _replace_engine(self, key: tuple[str, str], device: str, options: ServingOptions) -> None:
        """Drop the engine (and its batcher) and load ``key`` = (checkpoint, backend)."""
        if self._batcher is not None:
            self._batcher.close()
        self._engine = self._batcher = None  # free the old weights before loading new ones
        self._engine_key = None
        try:
            self._engine = load_engine(*key, device, options)
        except CheckpointError as error:  # the message says what to set: give it to the caller
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error)) from error
        except ValueError as error:  # a backend that cannot run on this device
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(error)) from error
        self._engine_key = key

    def _listed_checkpoint(self, model_files: dict) -> str:
        """``model_files["checkpoint"]`` if it is a checkpoint of ``models.json``, else a 400.
        Deploy requests may name any ``model_files``; only the operator chooses another
        folder or hub id (``KOSMOS2_CHECKPOINT``, which then stands for the listed one)."""
        listed = sorted({row["meta"]["model_files"]["checkpoint"] for row in self.pretrained_models})
        checkpoint = (model_files or {}).get("checkpoint")
        if checkpoint not in listed:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=(
                f"model_files.checkpoint must be one of this app's models {listed}, got "
                f"'{checkpoint}'. To serve another folder or hub id, set {CHECKPOINT_ENV} on the server."))
        return checkpoint

    def predict_batch(self, images_np: list[np.ndarray], settings: dict[str, Any]) -> list[list]:
        """Run the requested task on RGB uint8 images (H, W, 3). Returns per image the boxes
        (pixel tlbr of that image), the text and the described regions, as DTOs.

        Concurrent requests share model passes through the :class:`RequestBatcher`."""
        batcher = self._require_batcher()
        self._sweep_finished_requests()
        try:
            policy = policy_from_settings(settings, self.custom_inference_settings_dict)
            if policy.task == "region_description" and not policy.regions:
                raise SettingsError("regions", "task 'region_description' needs regions: pixel "
                                    "[left, top, right, bottom] boxes; to describe an image's "
                                    "existing labels, call /describe_regions with its image_id")
            results = batcher.run(images_np, policy)
        except SettingsError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(error)) from error
        return [result_to_predictions(result, image.shape[1], image.shape[0], policy.regions)
                for result, image in zip(results, images_np)]

    def _sweep_finished_requests(self) -> None:
        """Bound what the SDK keeps of finished requests (see :mod:`.request_janitor`)."""
        if self._janitor is None:  # the SDK creates its manager in its constructor
            self._janitor = FinishedRequestJanitor(self.inference_requests_manager)
        self._janitor.maybe_sweep()

    def _require_batcher(self) -> RequestBatcher:
        batcher = self._batcher
        if batcher is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                detail="The model is not deployed yet: press Serve or call /deploy_from_api.")
        return batcher

    def _predictions_to_annotation(self, image_path, predictions, classes_whitelist=None):
        """The SDK's annotation of the box DTOs, plus an image tag per :class:`ImageText`, as a
        :class:`DrawnAnnotation` (drawn with phrases and confidences). Overridden because the SDK
        has no public hook for image-level tags."""
        texts = [p for p in predictions if isinstance(p, ImageText)]
        boxes = [p for p in predictions if not isinstance(p, ImageText)]
        ann = super()._predictions_to_annotation(image_path, boxes, classes_whitelist)
        with self._meta_lock:
            tags = [sly.Tag(self._model_meta.get_tag_meta(t.tag), t.value) for t in texts]
        return DrawnAnnotation.of(ann.add_tags(tags))  # CLI predict --draw: boxes, phrases, scores

    def _inference_batched_wrapper(self, source, settings):
        """The SDK's batched inference, run in chunks of the engine's batch size with a progress
        bar, with each result's ``data`` holding the task and its text (``caption`` /
        ``answer`` / ``descriptions``), so that clients read it directly. Overridden because the
        SDK fills ``data`` only in sliding-window mode, and reads every image of a call before
        inferring any: CLI ``predict`` on a folder held the whole folder decoded in memory,
        with no progress shown. Requests over HTTP come in batches already (one chunk)."""
        chunk = self._require_batcher().max_images
        anns, data = [], []
        with sly.tqdm_sly(total=len(source), desc="Kosmos-2", unit="image", disable=len(source) <= chunk) as bar:
            for start in range(0, len(source), chunk):
                part_anns, part_data = super()._inference_batched_wrapper(source[start:start + chunk], settings)
                anns, data = anns + part_anns, data + part_data
                bar.update(len(part_anns))
        for ann, item in zip(anns, data):
            item.update(task=str(settings.get("task") or "caption").strip().lower(), **annotation_text(ann))
        return anns, data

    def _create_label(self, dto: PredictionBBox) -> sly.Label:
        """Diff to ``ObjectDetection._create_label``: a phrase's class is created on first use
        (under a lock, since requests run in parallel threads) instead of raising ``KeyError``,
        and a :class:`DescribedRegion` gets a ``description`` tag instead of a confidence.
        Overridden because the SDK has no public hook for open-vocabulary label creation."""
        with self._meta_lock:
            obj_class = self._model_meta.get_obj_class(dto.class_name)
            if obj_class is None:
                obj_class = sly.ObjClass(dto.class_name, sly.Rectangle, class_colour(dto.class_name))
                self._model_meta = self._model_meta.add_obj_class(obj_class)
            if isinstance(dto, DescribedRegion):
                tag = sly.Tag(self._model_meta.get_tag_meta(DESCRIPTION_TAG), dto.description)
            else:
                tag = sly.Tag(self._model_meta.get_tag_meta(self._confidence), dto.score)
        return sly.Label(sly.Rectangle(*dto.bbox_tlbr), obj_class, [tag])

    def serve(self):
        """The SDK's ``serve``, then the task routes and image-error handlers (see :mod:`.routes`)."""
        super().serve()
        self._register_extra_routes()

    def _run_server(self):
        """The extra routes, then uvicorn on :func:`listen_address` (127.0.0.1:8000 unless
        ``KOSMOS2_HOST`` / ``KOSMOS2_PORT`` say otherwise). Overridden because in CLI ``deploy``
        mode the SDK starts uvicorn inside ``serve()``, before routes added after it exist, and
        binds every interface (0.0.0.0) with no setting to change it."""
        self._register_extra_routes()
        self._uvicorn_server = _uvicorn_server(self._app)
        self._uvicorn_server.run()

    def _run_server_in_thread(self):
        """:meth:`_run_server` in a daemon thread (quick deploy: ``Kosmos2(model=..., device=...)``
        in Python). Overridden for the same reasons."""
        self._server_thread = threading.Thread(target=self._run_server, daemon=True)
        self._server_thread.start()

    def _register_extra_routes(self) -> None:
        if not self._extra_routes_registered:
            register_task_routes(self, self._app.get_server())
            register_image_error_handlers(self._app.get_server(), self.max_image_pixels)
            register_body_check(self._app.get_server())
            self._extra_routes_registered = True

    def get_info(self) -> dict[str, Any]:
        """The SDK's info, claiming only what works: images, batches, async image jobs; no video,
        no tracking, no sliding window."""
        info = super().get_info()
        info.update(
            videos_support=False,
            async_video_inference_support=False,
            tracking_on_videos_support=False,
            tracking_algorithms=[],
            model_name=self.FRAMEWORK_NAME,
            checkpoint=self._engine_key[0] if self._engine_key else None,
            backend=self._engine_key[1] if self._engine_key else None,
            device=self.device,
            dtype=str(self._engine.dtype).replace("torch.", "") if self._engine else None,
        )
        return info


def _uvicorn_server(app) -> uvicorn.Server:
    host, port = listen_address()
    return uvicorn.Server(uvicorn.Config(app=app, host=host, port=port, ws="websockets"))


def _precision_name(engine) -> str:
    """The SDK knows FP32, FP16 and INT8: bf16 is reported as FP16 (half precision), int4
    OpenVINO weights as INT8 (the lowest it knows)."""
    weights = getattr(engine, "weights", None)
    if weights in ("int8", "int4"):
        return ModelPrecision.INT8
    return ModelPrecision.FP32 if str(engine.dtype) == "torch.float32" else ModelPrecision.FP16