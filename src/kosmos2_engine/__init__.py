"""Kosmos-2 inference engine: torch, transformers, PIL and numpy only; nothing of Supervisely.

Typical use::

    engine = Kosmos2Engine.load("microsoft/kosmos-2-patch14-224", device="cuda:0")
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": "dog. red car"})
    [result] = engine.run([image_rgb_uint8], policy)
    for box in result.boxes:
        print(box.name, box.xyxy, box.score)  # normalised xyxy, confidence in [0, 1]
"""

from .batcher import RequestBatcher
from .checkpoint import CHECKPOINT_ENV, CheckpointError, default_dtype
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
from .policy import (
    MAX_ITEMS,
    TASKS,
    GenerationPolicy,
    SettingsError,
    find_markup,
)
from .settings import policy_from_settings
from .tasks import NamedBox, TaskResult
from .templates import CAPTION_PROMPT

__all__ = [
    "CAPTION_PROMPT",
    "CHECKPOINT_ENV",
    "CheckpointError",
    "Generation",
    "GenerationPolicy",
    "GroundedBox",
    "GroundedPhrase",
    "GroundedText",
    "Kosmos2Engine",
    "available_devices",
    "check_device",
    "default_device",
    "MAX_ITEMS",
    "NamedBox",
    "PreparedRun",
    "RequestBatcher",
    "SettingsError",
    "TASKS",
    "TaskResult",
    "box_to_patch_indices",
    "box_to_pixel_tlbr",
    "default_dtype",
    "drop_unconfident_boxes",
    "find_markup",
    "parse_grounded_pieces",
    "patch_indices_to_box",
    "policy_from_settings",
]
