"""The canary that checks compiled decoding at warm-up: a fixed image and fixed prompts, decoded
compiled and eagerly on the same weights. If a compiled step (CUDA graphs) ever gives other
tokens than eager decoding, the engine serves eagerly and says why (:class:`DecoderStatus`),
instead of writing wrong boxes for every request.

The image is drawn here, the same on every machine: a grey gradient with a red disc and a blue
square (the kind of scene every Kosmos-2 grounds); the prompts are a grounded caption, a
detailed caption and a phrase to ground.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .prompts import EncodedPrompt
from .runtime.torch.backend import TorchBackend

CANARY_PROMPTS = (
    "<grounding>An image of",
    "<grounding> Describe this image in detail:",
    "<grounding><phrase> a red circle</phrase>",
)
CANARY_TOKENS = 32  # long enough to write a phrase and its two location tokens
CANARY_PHRASES = ("a red circle", "a blue square")  # grounded at warm-up by a bf16 / fp16 engine, and in fp32
MIN_SHARE_WITHIN_ONE_BIN = 0.95  # of the canary's box corners, a half-precision engine against fp32


@dataclass(frozen=True)
class DecoderStatus:
    """How the engine decodes: ``mode`` is ``compiled`` (CUDA graphs) or ``eager``; when
    compiling was asked for but is not used, ``fallback`` says why in one word
    (``compile_failed``, ``canary_mismatch``) and ``detail`` in a sentence."""

    mode: str = "eager"
    fallback: str = ""
    detail: str = ""
    dtype_detail: str = ""  # why the engine runs in float32 where it would run in half precision

    def describe(self) -> str:
        """One line for logs: ``compiled (CUDA graphs)``, ``eager``, or ``eager (<detail>)``."""
        if self.mode == "compiled":
            return "compiled (CUDA graphs)"
        return f"eager ({self.detail})" if self.detail else "eager"


def canary_image(side: int) -> np.ndarray:
    """RGB uint8 (side, side, 3): a left-to-right grey gradient, a red disc in the left half and
    a blue square in the right half."""
    rows, cols = np.mgrid[0:side, 0:side]
    grey = (150 + 80 * cols / max(side - 1, 1)).astype(np.uint8)
    image = np.repeat(grey[..., None], 3, axis=2)
    disc = (rows - side // 2) ** 2 + (cols - side // 4) ** 2 <= (side // 6) ** 2
    image[disc] = (215, 40, 40)
    square = (abs(rows - side // 2) <= side // 7) & (abs(cols - 3 * side // 4) <= side // 7)
    image[square] = (45, 80, 220)
    return image


def first_difference(
    backend: TorchBackend, image_embeds: Any, prompts: Sequence[EncodedPrompt], stop_ids: Sequence[int]
) -> tuple[int, int] | None:
    """Decode ``prompts`` against ``image_embeds[0]`` compiled (``backend.decode``) and eagerly
    (``backend.decode_reference``): ``None`` when every prompt's tokens agree up to its first
    stop token, else (prompt index, token index) of the first disagreement."""
    rows = [0] * len(prompts)
    compiled = _tokens(backend.decode(image_embeds, prompts, CANARY_TOKENS, stop_ids, rows).tokens)
    eager = _tokens(backend.decode_reference(image_embeds, prompts, CANARY_TOKENS, stop_ids, rows).tokens)
    for index, (ours, reference) in enumerate(zip(compiled, eager)):
        ours, reference = _until_stop(ours, stop_ids), _until_stop(reference, stop_ids)
        if ours != reference:
            shorter = min(len(ours), len(reference))
            return index, next((k for k in range(shorter) if ours[k] != reference[k]), shorter)
    return None


def _tokens(tokens: Any) -> np.ndarray:
    return tokens.cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)


def _until_stop(row: np.ndarray, stop_ids: Sequence[int]) -> list[int]:
    ids = [int(token) for token in row]
    stop = next((k for k, token in enumerate(ids) if token in stop_ids), None)
    return ids if stop is None else ids[: stop + 1]


def share_within_one_bin(ours: Sequence[Any], reference: Sequence[Any]) -> float:
    """Of the box corners of two runs' :class:`~kosmos2_engine.TaskResult` lists (location
    cells, in order), the share at most one cell apart on each axis of the 32 x 32 grid; a
    different number of boxes counts every corner of the longer list as apart; 1.0 when neither
    has a box."""
    from .grounding import GRID, box_to_patch_indices

    def corners(results):
        return [cell for result in results for box in result.boxes for cell in box_to_patch_indices(box.xyxy)]

    first, second = corners(ours), corners(reference)
    if not first and not second:
        return 1.0
    close = sum(abs(a // GRID - b // GRID) <= 1 and abs(a % GRID - b % GRID) <= 1 for a, b in zip(first, second))
    return close / max(len(first), len(second))
