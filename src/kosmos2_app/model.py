"""Kosmos-2 as a Supervisely serving app: a thin adapter over :mod:`kosmos2_engine`.

The SDK owns the HTTP server, the GUI, the CLI and the annotation format; this class loads the
engine, turns settings into a :class:`~kosmos2_engine.GenerationPolicy`, and grounded phrases
into rectangles with a ``confidence`` tag.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import supervisely as sly
from fastapi import HTTPException, status
from supervisely.nn.inference import ModelPrecision, RuntimeType
from supervisely.nn.prediction_dto import PredictionBBox

from kosmos2_engine import (
    CHECKPOINT_ENV,
    CheckpointError,
    Kosmos2Engine,
    SettingsError,
    policy_from_settings,
)

from .predictions import class_colour, grounded_to_bboxes

SRC_DIR = Path(__file__).resolve().parent.parent


class Kosmos2(sly.nn.inference.PromptBasedObjectDetection):
    """Grounded captioning with Kosmos-2; every grounded phrase becomes a rectangle class."""

    FRAMEWORK_NAME = "Kosmos-2"
    MODELS = str(SRC_DIR / "models.json")
    APP_OPTIONS = str(SRC_DIR / "app_options.yaml")
    INFERENCE_SETTINGS = str(SRC_DIR / "inference_settings.yaml")

    def __init__(self, *args, **kwargs):
        # Set before the SDK constructor: in CLI mode it deploys (calls load_model) inside it.
        self._engine: Kosmos2Engine | None = None
        self._engine_checkpoint: str | None = None
        self._meta_lock = threading.Lock()
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
        :param runtime: only ``PyTorch``.
        :type runtime: str

        The SDK calls this again with ``device="cpu"`` after an hour idle and with the original
        device on the next request; the loaded weights are then moved, not reloaded.
        """
        if runtime != RuntimeType.PYTORCH:
            raise ValueError(f"Runtime '{runtime}' is not supported; use '{RuntimeType.PYTORCH}'.")
        checkpoint = os.environ.get(CHECKPOINT_ENV) or model_files["checkpoint"]
        if self._engine is not None and self._engine_checkpoint == checkpoint:
            self._engine.to(device)
        else:
            self._engine = None  # free the old weights before loading new ones
            try:
                self._engine = Kosmos2Engine.load(checkpoint, device=device)
            except CheckpointError as error:  # the message says what to set: give it to the caller
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error)) from error
            self._engine_checkpoint = checkpoint
        self._engine.warm_up()
        self.model_precision = _precision_name(self._engine.dtype)
        self.classes = []
        with self._meta_lock:
            if self._model_meta is None:
                self._model_meta = sly.ProjectMeta()
            self._get_confidence_tag_meta()

    def predict_batch(self, images_np: list[np.ndarray], settings: dict[str, Any]
                      ) -> list[list[PredictionBBox]]:
        """Grounded captions of RGB uint8 images (H, W, 3); boxes in pixels of each image."""
        if self._engine is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                detail="The model is not deployed yet: press Serve or call /deploy_from_api.")
        try:
            policy = policy_from_settings(settings, self.custom_inference_settings_dict)
            generations = self._engine.caption(images_np, policy)
        except SettingsError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(error)) from error
        return [
            grounded_to_bboxes(generation.grounded, image.shape[1], image.shape[0])
            for generation, image in zip(generations, images_np)
        ]

    def _create_label(self, dto: PredictionBBox) -> sly.Label:
        """Diff to ``ObjectDetection._create_label``: a phrase's class is created on first use
        (under a lock, since requests run in parallel threads) instead of raising ``KeyError``.
        Overridden because the SDK has no public hook for open-vocabulary label creation."""
        with self._meta_lock:
            obj_class = self._model_meta.get_obj_class(dto.class_name)
            if obj_class is None:
                obj_class = sly.ObjClass(dto.class_name, sly.Rectangle, class_colour(dto.class_name))
                self._model_meta = self._model_meta.add_obj_class(obj_class)
            confidence = self._model_meta.get_tag_meta(self._confidence)
        return sly.Label(sly.Rectangle(*dto.bbox_tlbr), obj_class, [sly.Tag(confidence, dto.score)])

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
            checkpoint=self._engine_checkpoint,
            device=self.device,
            dtype=str(self._engine.dtype).replace("torch.", "") if self._engine else None,
        )
        return info


def _precision_name(dtype) -> str:
    """The SDK knows FP32, FP16 and INT8; bf16 is reported as FP16 (half precision)."""
    return ModelPrecision.FP32 if str(dtype) == "torch.float32" else ModelPrecision.FP16
