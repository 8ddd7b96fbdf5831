"""Kosmos-2 inference engine: torch, transformers, PIL and numpy only; nothing of Supervisely.

Typical use::

    engine = Kosmos2Engine.load("microsoft/kosmos-2-patch14-224", device="cuda:0")
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": "dog. red car"})
    [result] = engine.run([image_rgb_uint8], policy)
    for box in result.boxes:
        print(box.name, box.xyxy, box.score)  # normalised xyxy, confidence in [0, 1]

A request flows through the modules in this order: :mod:`.tasks` (the task table and the
checked policy; :mod:`.settings` builds one from raw settings) → :mod:`.prompts` (templates
and token layout) → :mod:`.engine` (encode images once, decode every prompt) and
:mod:`.batcher` (concurrent requests share runs) → :mod:`.runtime` (the network: torch or
OpenVINO) → :mod:`.outputs` (grounded text, one :class:`TaskResult` per image). These names
are the engine's public surface; the serving app and the jobs use nothing else.
"""

from __future__ import annotations

from .batcher import RequestBatcher, RunStats
from .canary import DecoderStatus
from .checkpoint import CHECKPOINT_ENV, CheckpointError
from .devices import available_devices, check_device, default_device
from .engine import Kosmos2Engine, PreparedRun
from .grounding import (
    GroundedBox,
    GroundedPhrase,
    GroundedText,
    box_to_patch_indices,
    box_to_pixel_xyxy,
    drop_unconfident_boxes,
    parse_grounded_pieces,
    patch_indices_to_box,
)
from .imaging import ImageInput, SizedImage, parallel_map, shrink, size_of, to_rgb
from .outputs import Generation, NamedBox, TaskResult
from .prompts import CAPTION_PROMPT
from .propagation import MaskPropagator, Propagation
from .runtime.protocol import Backend, DecodedBatch
from .segmentation import BoxMask, BoxSegmenter
from .settings import policy_from_settings
from .tasks import TASK_TABLE, TASKS, GenerationPolicy, ResultKind, Task, TextKind
from .validation import MAX_ITEMS, MAX_PHRASES, SettingsError, find_markup


def load_openvino_engine(checkpoint: str, weights: str = "int8", max_batch_size: int = 16) -> Kosmos2Engine:
    """An engine on the OpenVINO runtime (CPU), exporting the IR beside the weights first when
    there is none for ``checkpoint`` yet. Imports ``openvino`` only when called."""
    from .runtime.openvino.backend import load_openvino_engine as load

    return load(checkpoint, weights, max_batch_size)


__all__ = [
    "CAPTION_PROMPT",
    "CHECKPOINT_ENV",
    "MAX_ITEMS",
    "MAX_PHRASES",
    "TASKS",
    "TASK_TABLE",
    "Backend",
    "BoxMask",
    "BoxSegmenter",
    "DecoderStatus",
    "CheckpointError",
    "DecodedBatch",
    "Generation",
    "GenerationPolicy",
    "GroundedBox",
    "GroundedPhrase",
    "GroundedText",
    "ImageInput",
    "SizedImage",
    "shrink",
    "size_of",
    "Kosmos2Engine",
    "MaskPropagator",
    "NamedBox",
    "PreparedRun",
    "Propagation",
    "RequestBatcher",
    "ResultKind",
    "RunStats",
    "SettingsError",
    "Task",
    "TaskResult",
    "TextKind",
    "available_devices",
    "box_to_patch_indices",
    "box_to_pixel_xyxy",
    "check_device",
    "default_device",
    "drop_unconfident_boxes",
    "find_markup",
    "load_openvino_engine",
    "parallel_map",
    "parse_grounded_pieces",
    "patch_indices_to_box",
    "policy_from_settings",
    "to_rgb",
]
