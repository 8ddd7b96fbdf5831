"""Kosmos-2 as a Supervisely serving app: a thin adapter over :mod:`kosmos2_engine`.

The SDK owns the HTTP server, the GUI, the CLI and the annotation format; this class loads the
engine, turns settings into a :class:`~kosmos2_engine.GenerationPolicy`, grounded phrases into
rectangles with a ``confidence`` tag, and text into ``caption`` / ``answer`` image tags and
``description`` label tags (also copied into each result's ``data``). Every route it exposes,
the SDK's included, sits behind :class:`~.http.front_door.FrontDoor`; the SDK's image and
deploy routes are served by :mod:`.routes.images` and :mod:`.routes.deploy`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import supervisely as sly
import uvicorn
from fastapi import HTTPException, status
from supervisely.nn.inference import ModelPrecision, RuntimeType

from kosmos2_engine import (
    BoxMask,
    CheckpointError,
    ImageInput,
    Kosmos2Engine,
    RequestBatcher,
    SettingsError,
    TaskResult,
    size_of,
)

from . import app_files
from . import sdk_seam as sdk
from .config import (
    CHECKPOINT_ENV,
    AccessPolicy,
    PixelLimits,
    ServingOptions,
    UrlFetchPolicy,
    VideoLimits,
    access_log,
    checkpoint_override,
    declared_classes,
    listen_address,
    max_body_bytes,
    sam2_checkpoint,
)
from .custom_checkpoints import FIELD as TEAM_FILES_FIELD
from .custom_checkpoints import PYTORCH_ONLY, TeamFilesCheckpoints
from .engines import PYTORCH, backend_of, load_engine
from .http.errors import bad_request, register_error_handlers
from .http.front_door import FrontDoor
from .http.metrics import ServerMetrics
from .log_hygiene import keep_logs_tidy
from .masks import LazySegmenter, MaskOptions, sam2_encoder_of, sam2_of
from .ontology import Ontology, find_settings, requested_classes
from .pixel_budget import PixelBudget
from .reference_box import MODE, REFERENCE_MODE, reference_box
from .regions_of_interest import ROI_SETTINGS, Crop, cropped, crops_of
from .request_janitor import FinishedRequestJanitor
from .results.annotations import AnnotationBuilder, boxes_xyxy, kept_boxes
from .results.predictions import result_data, result_to_predictions
from .routes.decoding import ImageDecoder
from .routes.deploy import DeployRoute
from .routes.images import ImageRoutes
from .routes.smart_cache import SmartCacheRoute
from .routes.tasks import register_task_routes
from .routes.url_fetch import ImageFetcher
from .routes.videos import VideoRoutes
from .video.tracking import default_settings as tracker_defaults
from .video.tracking import tracking_available

LOGGERS = ("uvicorn.access", "uvicorn.error")


class Kosmos2(sdk.SdkHooks, sly.nn.inference.PromptBasedObjectDetection):
    """Every Kosmos-2 task (see ``inference_settings.yaml``): grounded phrases become rectangles
    of the class named by the phrase, text becomes ``caption`` / ``answer`` / ``description`` tags."""

    FRAMEWORK_NAME = "Kosmos-2"
    MODELS = str(app_files.MODELS)
    APP_OPTIONS = str(app_files.APP_OPTIONS)
    INFERENCE_SETTINGS = str(app_files.INFERENCE_SETTINGS)

    def __init__(self, *args, **kwargs):
        # Set before the SDK constructor: in CLI mode it deploys (calls load_model) inside it.
        self._engine: Kosmos2Engine | None = None
        self._batcher: RequestBatcher | None = None
        self._engine_key: tuple[str, str] | None = None
        self.annotations: AnnotationBuilder | None = None  # created by the first deploy
        self.team_files = TeamFilesCheckpoints(lambda: Path(self.model_dir) / "team-files")
        self.ontology = self._operators_ontology()
        self._janitor: FinishedRequestJanitor | None = None
        self._routes_in_place = False
        self._activity_noted = float("-inf")
        self._waking = threading.Lock()
        self.metrics = ServerMetrics(decoder_status=lambda: self._engine.decoder_status if self._engine else None)
        self.pixel_limits = PixelLimits.from_environment()
        self.image_decoder = ImageDecoder(self.pixel_limits, PixelBudget(self.pixel_limits.decoding_at_once))
        self.access_policy = AccessPolicy.from_environment()
        self.fetch_policy = UrlFetchPolicy.from_environment()
        self.video_limits = VideoLimits.from_environment()
        self.segmenter = LazySegmenter(sam2_checkpoint())
        for logger in (sly.logger, *map(logging.getLogger, LOGGERS)):
            keep_logs_tidy(logger)  # before the SDK constructor logs anything
        if not access_log():  # no line per request at info level (uvicorn set its level already)
            logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        super().__init__(*args, **kwargs)
        sdk.use_unguessable_request_ids(self)

    def load_model(
        self,
        model_files: dict,
        model_info: dict,
        model_source: str,
        device: str,
        runtime: str = RuntimeType.PYTORCH,
        **kwargs,
    ) -> None:
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

        The engine that serves is replaced only once the new one is loaded and warm, so a
        deploy that fails leaves it serving. The SDK calls this again with ``device="cpu"``
        after an hour idle and with the original device on the next request; the loaded
        weights are then moved, not reloaded.
        """
        if runtime != RuntimeType.PYTORCH:
            raise bad_request(
                f"Runtime '{runtime}' is not supported; use '{RuntimeType.PYTORCH}' (the OpenVINO "
                "variants are rows of the model table)."
            )
        checkpoint = self._listed_checkpoint(model_files)
        origin = self.team_files.origin(checkpoint)  # a fine-tuned checkpoint from Team Files
        try:
            key = (checkpoint if origin else checkpoint_override() or checkpoint, backend_of(model_info))
            options = ServingOptions.from_environment(device)
            sam2 = sam2_of(model_info, device, self.pretrained_models)
        except ValueError as error:
            raise bad_request(str(error)) from error
        if origin and key[1] != PYTORCH:
            raise bad_request(f"{TEAM_FILES_FIELD}: {PYTORCH_ONLY}, not {key[1]}")
        if self._engine is not None and self._batcher is not None and self._engine_key == key:
            self._engine.max_batch_size = options.max_batch_size
            self._batcher.call(self._engine.to, device, options.compile_decoder)
            self._batcher.call(self._engine.warm_up)
        elif origin:
            self._swap_in(*self._loaded_custom_engine(key, device, options, origin), key)
            self._use_sam2(sam2, openvino="")
        else:
            self._swap_in(*self._loaded_engine(key, device, options), key)
            self._use_sam2(sam2, openvino=sam2_encoder_of(key[1]))
        batcher = self._require_batcher()
        batcher.max_wait_s, batcher.max_images = options.batch_wait_s, options.max_batch_size
        self.segmenter.follow(batcher.call, batcher.engine.device)
        if options.sam2_at_deploy:  # ready means SAM 2 loaded and warm too (a 503 naming KOSMOS2_SAM2 if not)
            self.segmenter.warm(batcher.call, batcher.engine.device)
        self.max_batch_size = options.max_batch_size  # the SDK refuses a larger state["batch_size"]
        recorded = getattr(self, "checkpoint_info", None)
        if recorded is not None and origin:  # name the Team Files folder, not the local cache
            self.checkpoint_info = dataclasses.replace(
                recorded, checkpoint_name=Path(origin).name, checkpoint_url=origin, custom_checkpoint_path=origin
            )
        elif recorded is not None:  # the SDK recorded the listed checkpoint: say what loaded
            self.checkpoint_info = dataclasses.replace(
                recorded, checkpoint_name=Path(key[0]).name, checkpoint_url=key[0]
            )
        self.model_precision = _precision_name(batcher.engine)
        self._publish_annotation_meta()

    def _use_sam2(self, checkpoint: str, openvino: str) -> None:
        """SAM 2 as the deploy that loaded the engine chose it (:func:`.masks.sam2_of`), its image
        encoder in OpenVINO when the engine is; a move of the same engine (the idle freeze and
        its wake-up) keeps the one it has."""
        if (self.segmenter.checkpoint, self.segmenter.openvino) != (checkpoint, openvino):
            self.segmenter = LazySegmenter(checkpoint, openvino)

    def _loaded_engine(
        self, key: tuple[str, str], device: str, options: ServingOptions
    ) -> tuple[Kosmos2Engine, RequestBatcher]:
        """A new engine for ``key`` = (checkpoint, backend) and its batcher, loaded and warm.

        Loading runs in a thread of its own that ends with it, warm-up on the batcher's engine
        thread: that thread is then the only one left that has run torch (see
        :mod:`kosmos2_engine.batcher` for why that matters)."""
        try:
            engine = _in_passing_thread(load_engine, *key, device, options)
        except CheckpointError as error:  # the message says what to set: give it to the caller
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error)) from error
        except ValueError as error:  # a backend or device that cannot run here
            raise bad_request(str(error)) from error
        engine.max_batch_size = options.max_batch_size
        batcher = RequestBatcher(engine, observer=self.metrics.observe_run)
        try:
            batcher.call(engine.warm_up)
        except BaseException:
            batcher.close()
            raise
        return engine, batcher

    def _loaded_custom_engine(
        self, key: tuple[str, str], device: str, options: ServingOptions, origin: str
    ) -> tuple[Kosmos2Engine, RequestBatcher]:
        """:meth:`_loaded_engine` for a checkpoint from Team Files: a folder that does not load
        (wrong shapes, broken weights) is the client's choice, so a 400 naming it."""
        try:
            return self._loaded_engine(key, device, options)
        except HTTPException as error:
            raise bad_request(f"deploy_params.model_files.checkpoint: {origin} does not load: {error.detail}") from None
        except Exception as error:  # noqa: BLE001 - anything the weights raise is the folder's fault
            first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            raise bad_request(
                f"deploy_params.model_files.checkpoint: {origin} does not load as Kosmos-2: "
                f"{type(error).__name__}: {first_line}"
            ) from None

    def _swap_in(self, engine: Kosmos2Engine, batcher: RequestBatcher, key: tuple[str, str]) -> None:
        """Serve ``engine`` from now on; the old engine's batcher finishes what it has queued."""
        old_batcher = self._batcher
        self._engine, self._batcher, self._engine_key = engine, batcher, key
        if old_batcher is not None:
            old_batcher.close()

    def _publish_annotation_meta(self) -> None:
        """The model meta the SDK serves (and ``get_classes``) is the annotation builder's: the
        declared classes, then every class met since (kept across deploys: classes already
        handed out stay)."""
        if self.annotations is None:
            self.annotations = AnnotationBuilder(on_meta_change=self._set_meta)
        self.annotations.declare(self.ontology.names, self.ontology.masked)
        self._set_meta(self.annotations.meta)

    def _set_meta(self, meta: sly.ProjectMeta) -> None:
        sdk.set_model_meta(self, meta)
        self.classes = [obj_class.name for obj_class in meta.obj_classes]

    @staticmethod
    def _operators_ontology() -> Ontology:
        """``KOSMOS2_CLASSES`` if the operator set it, else COCO's 80 classes."""
        text = declared_classes()
        try:
            return Ontology.default() if text is None else Ontology.parse(text, "KOSMOS2_CLASSES")
        except SettingsError as error:
            raise ValueError(str(error)) from None

    def declare_classes(self, ontology: Ontology) -> None:
        """Serve ``ontology`` from now on (a deploy's ``classes``): the meta starts again from
        its classes (those of earlier declarations and requests are no longer listed)."""
        self.ontology = ontology
        self.annotations = None
        self._publish_annotation_meta()

    def _listed_checkpoint(self, model_files: dict) -> str:
        """``model_files["checkpoint"]`` if it is a checkpoint of ``models.json``, else a 400.
        Deploy requests may name any ``model_files``; only the operator chooses another
        folder or hub id (``KOSMOS2_CHECKPOINT``, which then stands for the listed one)."""
        listed = sorted({row["meta"]["model_files"]["checkpoint"] for row in self.pretrained_models})
        checkpoint = (model_files or {}).get("checkpoint")
        if isinstance(checkpoint, str) and self.team_files.origin(checkpoint):
            return checkpoint  # fetched from Team Files by this deploy (see fetch_team_files_checkpoint)
        if not isinstance(checkpoint, str) or checkpoint not in listed:
            raise bad_request(
                f"model_files.checkpoint must be one of this app's models {listed}, got "
                f"'{checkpoint}'. To serve another folder or hub id, set {CHECKPOINT_ENV} on the server."
            )
        return checkpoint

    def fetch_team_files_checkpoint(self, model_files: dict) -> dict[str, str]:
        """``{"checkpoint": local folder}`` of the Team Files folder a custom deploy names (see
        :mod:`.custom_checkpoints`)."""
        return self.team_files.fetch(model_files)

    def submit(self, images: Sequence[ImageInput], settings: dict[str, Any]) -> Future:
        """The one way into the engine, whatever the route (blocking: call it from a worker
        thread). Wakes a model the idle timer froze, restarts that timer, bounds what the SDK
        keeps of finished requests, then checks ``settings`` (over the defaults of
        ``inference_settings.yaml``), crops each image (RGB uint8 (H, W, 3), or already squashed
        to the model's input by :mod:`.routes.decoding` when there is no region) to its region of
        interest if one is asked for, and queues them on the batcher, where concurrent
        requests share model passes. Returns the future of their
        :class:`~kosmos2_engine.TaskResult` list; bad settings are a 400 at once."""
        if sdk.is_frozen(self):
            self._wake_up()
        self._note_activity()
        self._sweep_finished_requests()
        self._require_batcher()
        reference = reference_box(settings, len(images))
        if reference is not None:  # the labelling toolbox's selected box
            return reference.submit([_whole(image) for image in images], settings, self._submit_views)
        crops = crops_of(settings, len(images))
        views = list(images) if crops is None else cropped([_whole(image) for image in images], crops)
        return self._submit_views(views, settings)

    def _submit_views(self, views: Sequence[ImageInput], settings: dict[str, Any]) -> Future:
        """``views`` (what the model sees) queued on the batcher under ``settings``' policy."""
        policy = self.policy_for(settings)
        try:
            return self._require_batcher().submit(views, policy)
        except SettingsError as error:
            raise bad_request(str(error)) from error

    def model_input_side(self, settings: dict[str, Any]) -> int | None:
        """The side of the model's square input, to which decoded images are squashed at once;
        None when ``settings`` ask for a region of interest (it is cut from the whole image)."""
        if any(settings.get(name) is not None for name in ROI_SETTINGS) or settings.get(MODE) == REFERENCE_MODE:
            return None
        if MaskOptions.of(settings).masks or self.masked_classes(settings):  # SAM 2 segments the whole image
            return None
        return self._require_batcher().engine.image_size

    def annotations_of(
        self, images: Sequence[ImageInput], results: list[TaskResult], settings: dict[str, Any]
    ) -> list[sly.Annotation]:
        """The annotation of each whole image from its result (boxes of a region of interest
        shifted back into the image; the ``classes`` whitelist applied, as the SDK does, except
        around the toolbox's selected box, whose results are whole-image and hold only the
        classes asked for, and its description); with ``masks: true`` each kept box segmented,
        else each kept box of a class declared ``mask`` (see :mod:`.masks`: blocking, on the
        engine thread)."""
        if reference_box(settings, len(images)) is not None:  # merged into whole-image results, classes found
            found, classes = None, None
        else:
            found, classes = crops_of(settings, len(images)), self.classes_kept(settings)
        crops: list[Crop | None] = [None] * len(images) if found is None else list(found)
        builder = self._require_annotations()
        sizes = [size_of(image) for image in images]
        predictions = [
            builder.predictions_of(result, height, width, crop)
            for (width, height), result, crop in zip(sizes, results, crops)
        ]
        options = MaskOptions.of(settings)
        kept = [kept_boxes(p, classes) for p in predictions]
        masked = self.masked_classes(settings)
        wanted = [[b for b in boxes if options.masks or b.class_name in masked] for boxes in kept]
        masks: list = [None] * len(images)
        if any(wanted):
            segmented = self._masks_of(images, wanted)
            masks = [_aligned(*image) for image in zip(kept, wanted, segmented)]
        return [
            builder.annotation(height, width, dtos, classes, image_masks, options.keep_boxes)
            for (width, height), dtos, image_masks in zip(sizes, predictions, masks)
        ]

    def _masks_of(self, images: Sequence[ImageInput], boxes: list[list]) -> list:
        """SAM 2's mask of each box (inclusive pixel tlbr DTOs) of each whole image."""
        batcher = self._require_batcher()
        segmenter = self.segmenter.get(batcher.call, batcher.engine.device)
        xyxy = [boxes_xyxy(image_boxes) for image_boxes in boxes]
        return batcher.call(segmenter.segment, [_whole(image) for image in images], xyxy)

    def propagates(self, settings: dict[str, Any], stride: int) -> bool:
        """Whether a video request's masks are carried through the frames its ``stride`` skips:
        it skips some, has masks (``masks: true``, or classes declared ``mask``) and did not send
        ``propagate_masks: false``. A 400 naming the field where a mask option is not a boolean,
        or (naming ``propagate_masks``) where this SAM 2 has no video memory (an image-only
        checkpoint)."""
        options = MaskOptions.of(settings)
        if stride < 2 or not options.propagate_masks or not (options.masks or self.masked_classes(settings)):
            return False
        refusal = self.segmenter.video_refusal
        if refusal is not None:
            raise bad_request(
                f"propagate_masks: {refusal}; send propagate_masks: false, or deploy a SAM 2 video checkpoint"
            )
        return True

    def follow_masks(self, key_frame: np.ndarray, masks: Sequence[BoxMask]):
        """A :class:`~kosmos2_engine.Propagation` of ``masks`` from ``key_frame``, and the
        function that runs its steps on the engine thread (``step(propagation.next, frame)``)."""
        batcher = self._require_batcher()
        propagator = self.segmenter.propagator(batcher.call, batcher.engine.device)
        return batcher.call(propagator.follow, key_frame, masks), batcher.call

    def infer(self, images: Sequence[ImageInput], settings: dict[str, Any]) -> list[tuple[sly.Annotation, TaskResult]]:
        """:meth:`submit`, waited for: each image's annotation and the result it was built from."""
        results = self.submit(images, settings).result()
        return list(zip(self.annotations_of(images, results, settings), results))

    def predict_batch(self, images_np: list[np.ndarray], settings: dict[str, Any]) -> list[list]:
        """The SDK's model hook, for SDK code that calls it directly (its routes reach
        :meth:`infer_in_chunks` instead): per RGB uint8 (H, W, 3) image the prediction DTOs
        (boxes in pixel tlbr of that image, the text, the described regions). The SDK crops
        images to a region of interest itself before it calls this, so none is applied here."""
        whole_images = {key: value for key, value in settings.items() if key not in ROI_SETTINGS}
        results = self.submit(images_np, whole_images).result()
        return [
            result_to_predictions(result, image.shape[1], image.shape[0]) for result, image in zip(results, images_np)
        ]

    def policy_for(self, settings: dict[str, Any]):
        """The :class:`~kosmos2_engine.GenerationPolicy` of request ``settings`` over the
        defaults of ``inference_settings.yaml`` (parsed once: the SDK parses the YAML text on
        every call), ``classes`` read by :mod:`.ontology`; ``HTTPException(400)`` naming the
        field when one is wrong."""
        try:
            return app_files.settings_policy(find_settings(settings, self.ontology))
        except SettingsError as error:
            raise bad_request(str(error)) from error

    @staticmethod
    def classes_kept(settings: dict[str, Any]) -> tuple[str, ...] | None:
        """The class names whose labels a request keeps (``settings["classes"]``), None for all."""
        classes = requested_classes(settings)
        return None if classes is None else _requested_ontology(classes).names

    def masked_classes(self, settings: dict[str, Any]) -> frozenset[str]:
        """The classes whose boxes a request's masks cover without ``masks: true``: those declared
        with geometry ``mask``, and those its own ``classes`` object gives that geometry."""
        classes = requested_classes(settings)
        return self.ontology.masked | (frozenset() if classes is None else _requested_ontology(classes).masked)

    def _wake_up(self) -> None:
        with self._waking:
            sdk.wake_up(self)

    def _note_activity(self) -> None:
        """Restart the SDK's idle-freeze timer, at most once a minute (the SDK restarts it, a
        new thread each time, on every inference): the model freezes an hour after the last
        request, give or take that minute."""
        now = time.monotonic()
        if now - self._activity_noted > 60:
            self._activity_noted = now
            sdk.restart_idle_freeze_timer(self)

    def _sweep_finished_requests(self) -> None:
        """Bound what the SDK keeps of finished requests (see :mod:`.request_janitor`). A
        failing sweep is logged once and never fails the request."""
        if self._janitor is None:  # the SDK creates its manager in its constructor
            self._janitor = FinishedRequestJanitor(self.inference_requests_manager)
        try:
            self._janitor.maybe_sweep()
        except Exception as error:  # noqa: BLE001 - bookkeeping must not fail inference
            if not self._janitor.failed:
                logging.getLogger(__name__).warning(
                    "Cleaning up finished requests failed (%s: %s); serving goes on.", type(error).__name__, error
                )
            self._janitor.failed = True

    def _require_annotations(self) -> AnnotationBuilder:
        if self.annotations is None:
            raise _not_deployed()
        return self.annotations

    def _require_batcher(self) -> RequestBatcher:
        if self._batcher is None:
            raise _not_deployed()
        return self._batcher

    def api_from_request(self, request) -> sly.Api:
        """The SDK's API for a request, retrying a failed call twice instead of ten times (an
        unreachable instance took about 5 minutes of the SDK's retries to become an error)."""
        api = super().api_from_request(request)
        if api is not None:
            api.retry_count = min(api.retry_count, 2)
        return api

    def make_annotation(self, image, predictions, classes_whitelist=None) -> sly.Annotation:
        """The annotation of ``image`` (an RGB array, or a path the SDK passes) from its DTOs,
        built by :class:`~.annotations.AnnotationBuilder` (as the labelling job builds it)."""
        height, width = (image if isinstance(image, np.ndarray) else sly.image.read(image)).shape[:2]
        kept = self.classes_kept({"classes": classes_whitelist})  # names, whatever form the SDK passed on
        return self._require_annotations().annotation(height, width, predictions, kept)

    def infer_in_chunks(self, source, settings) -> tuple[list, list[dict]]:
        """The SDK's batched inference (its routes, async jobs and CLI ``predict`` end here),
        through :meth:`infer` in chunks of the engine's batch size with a progress bar: each
        result's ``data`` holds the task and its text (``caption`` / ``answer`` /
        ``descriptions``). ``source`` holds RGB arrays or image paths, read a chunk at a time
        (the SDK read every image of a CLI ``predict`` folder before inferring any)."""
        chunk = self._require_batcher().max_images
        anns, data = [], []
        with sly.tqdm_sly(total=len(source), desc="Kosmos-2", unit="image", disable=len(source) <= chunk) as bar:
            for start in range(0, len(source), chunk):
                part = [
                    sly.image.read(item) if isinstance(item, str) else item for item in source[start : start + chunk]
                ]
                for annotation, result in self.infer(part, settings):
                    anns.append(annotation)
                    data.append(result_data(result))
                bar.update(len(part))
        return anns, data

    def serve(self):
        """The SDK's ``serve``, then the app's routes and its front door (see :meth:`put_routes_in_place`)."""
        super().serve()
        self.put_routes_in_place()

    def run_server(self) -> None:
        """The app's routes, then uvicorn on :func:`~.config.listen_address` (127.0.0.1:8000
        unless ``KOSMOS2_HOST`` / ``KOSMOS2_PORT`` say otherwise). In CLI ``deploy`` mode the
        SDK starts the server inside ``serve()``, before routes added after it exist, and on
        every interface (0.0.0.0) with no setting to change it."""
        self.put_routes_in_place()
        host, port = listen_address()
        config = uvicorn.Config(app=self.app, host=host, port=port, ws="websockets", access_log=access_log())
        self._uvicorn_server = uvicorn.Server(config)
        self._uvicorn_server.run()

    def put_routes_in_place(self) -> None:
        """Once: the task routes, the app's handlers of the SDK's image and deploy routes,
        error handlers, and :class:`~.http.front_door.FrontDoor` in front of everything."""
        if self._routes_in_place:
            return
        server = sdk.server_of(self)
        register_task_routes(self, server)
        image_routes = ImageRoutes(self, ImageFetcher(self.fetch_policy))
        image_routes.register(server)
        DeployRoute(self).register(server)
        VideoRoutes(self, self.video_limits).register(server)
        SmartCacheRoute(self, self.access_policy.server_address).register(server)
        register_error_handlers(server, self.pixel_limits.per_image)
        self.metrics.know_routes({getattr(route, "path", "") for route in server.router.routes} | {"/metrics"})
        server.add_middleware(
            FrontDoor,
            policy=self.access_policy,
            is_widget_callback=sdk.is_widget_callback,
            max_body_bytes=max_body_bytes(),
            metrics=self.metrics,
            fast_routes=image_routes.fast_routes(),
        )
        self._routes_in_place = True

    def get_tracking_settings(self) -> dict[str, dict[str, Any]]:
        """``/get_tracking_settings``: what a request's ``tracker_settings`` may tune, per tracker,
        at the values used when it does not (empty where tracking is not installed)."""
        return {"botsort": tracker_defaults()} if tracking_available() else {}

    def video_batch_size(self) -> int:
        """Frames of a video submitted together: the most images the engine runs at once."""
        return self._require_batcher().max_images

    def get_info(self) -> dict[str, Any]:
        """The SDK's info, claiming only what works: images, batches, async image jobs, videos
        (uploaded or by id), tracking where BoT-SORT's libraries are installed; no sliding
        window."""
        info = super().get_info()
        status = self._engine.decoder_status if self._engine else None
        tracking = tracking_available()
        info.update(
            videos_support=True,
            async_video_inference_support=True,
            tracking_on_videos_support=tracking,
            tracking_algorithms=["botsort"] if tracking else [],
            model_name=self.FRAMEWORK_NAME,
            checkpoint=self._engine_key[0] if self._engine_key else None,
            backend=self._engine_key[1] if self._engine_key else None,
            device=self.device,
            dtype=str(self._engine.dtype).replace("torch.", "") if self._engine else None,
            sam2=self.segmenter.checkpoint,
            sam2_loaded=self.segmenter.loaded,
            sam2_image_encoder=f"openvino-{self.segmenter.openvino}" if self.segmenter.openvino else "torch",
            decoder=status.mode if status else None,
            decoder_fallback=(status.detail or None) if status else None,
            dtype_fallback=(status.dtype_detail or None) if status else None,
        )
        return info


def _whole(image: ImageInput) -> np.ndarray:
    """A whole RGB array, from which a region of interest is cut (the decoders keep whole images
    when a region is asked for: :meth:`Kosmos2.model_input_side`)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"a region of interest is cut from an RGB array, got {type(image).__name__}")
    return image


def _not_deployed() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail="The model is not deployed yet: press Serve or call /deploy_from_api.",
    )


def _requested_ontology(classes: Any) -> Ontology:
    """A request's ``classes`` read as an ontology; a 400 naming the field when they are wrong."""
    try:
        return Ontology.parse(classes)
    except SettingsError as error:
        raise bad_request(str(error)) from error


def _aligned(boxes: list, segmented: list, masks: list) -> list:
    """One entry per box of ``boxes``: the mask of that box if it is among ``segmented`` (whose
    masks are ``masks``, in order), else None (it stays a rectangle)."""
    by_box = {id(box): mask for box, mask in zip(segmented, masks)}
    return [by_box.get(id(box)) for box in boxes]


def _in_passing_thread(function, *args):
    """``function(*args)`` in a new thread that ends when it returns; its result or error."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kosmos2-load") as pool:
        return pool.submit(function, *args).result()


def _precision_name(engine) -> str:
    """The SDK knows FP32, FP16 and INT8: bf16 is reported as FP16 (half precision), int4
    OpenVINO weights as INT8 (the lowest it knows)."""
    weights = engine.backend.weights
    if weights in ("int8", "int4", "int8-act"):
        return ModelPrecision.INT8
    return ModelPrecision.FP32 if str(engine.dtype) == "torch.float32" else ModelPrecision.FP16
