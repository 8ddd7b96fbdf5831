"""Kosmos-2 inference engine: torch, transformers, PIL and numpy only; nothing of Supervisely.

Typical use::

    engine = Kosmos2Engine.load("microsoft/kosmos-2-patch14-224", device="cuda:0")
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": "dog. red car"})
    [result] = engine.run([image_rgb_uint8], policy)
    for box in result.boxes:
        print(box.name, box.xyxy, box.score)  # normalised xyxy, confidence in [0, 1]

The tasks are the rows of :data:`~kosmos2_engine.task_table.TASK_TABLE`.
"""

from .backend import Backend, DecodedBatch
from .checkpoint import CHECKPOINT_ENV, CheckpointError
from .engine import Kosmos2Engine, PreparedRun, available_devices, check_device, default_device
from .generation import Generation
from .grounding import (
    GroundedBox,
    GroundedPhrase,
    GroundedText,
    box_to_patch_indices,
    box_to_pixel_tlbr,
    drop_unconfident_boxes,
    parse_grounded_pieces,
    patch_indices_to_box,
)
from .planning import NamedBox, TaskResult
from .policy import GenerationPolicy
from .request_batcher import RequestBatcher
from .settings import policy_from_settings
from .task_table import CAPTION_PROMPT, TASK_TABLE, TASKS, Task
from .validation import MAX_ITEMS, SettingsError, find_markup

__all__ = [
    "CAPTION_PROMPT",
    "CHECKPOINT_ENV",
    "MAX_ITEMS",
    "TASKS",
    "TASK_TABLE",
    "Backend",
    "CheckpointError",
    "DecodedBatch",
    "Generation",
    "GenerationPolicy",
    "GroundedBox",
    "GroundedPhrase",
    "GroundedText",
    "Kosmos2Engine",
    "NamedBox",
    "PreparedRun",
    "RequestBatcher",
    "SettingsError",
    "Task",
    "TaskResult",
    "available_devices",
    "box_to_patch_indices",
    "box_to_pixel_tlbr",
    "check_device",
    "default_device",
    "drop_unconfident_boxes",
    "find_markup",
    "parse_grounded_pieces",
    "patch_indices_to_box",
    "policy_from_settings",
]
