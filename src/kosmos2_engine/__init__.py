"""Kosmos-2 inference engine: torch, transformers, PIL and numpy only; nothing of Supervisely.

Typical use::

    engine = Kosmos2Engine.load("microsoft/kosmos-2-patch14-224", device="cuda:0")
    [generation] = engine.caption([image_rgb_uint8], GenerationPolicy())
    for phrase in generation.grounded.phrases:
        print(phrase.phrase, [box.xyxy for box in phrase.boxes])  # normalised xyxy
"""

from .checkpoint import CHECKPOINT_ENV, CheckpointError, default_dtype
from .engine import Generation, Kosmos2Engine
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
from .policy import DEFAULT_PROMPT, GenerationPolicy, SettingsError, policy_from_settings

__all__ = [
    "CHECKPOINT_ENV",
    "CheckpointError",
    "DEFAULT_PROMPT",
    "Generation",
    "GenerationPolicy",
    "GroundedBox",
    "GroundedPhrase",
    "GroundedText",
    "Kosmos2Engine",
    "SettingsError",
    "box_to_patch_indices",
    "box_to_pixel_tlbr",
    "default_dtype",
    "drop_unconfident_boxes",
    "parse_grounded_pieces",
    "patch_indices_to_box",
    "policy_from_settings",
]
