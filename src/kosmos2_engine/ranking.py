"""Top-k boxes of one grounding prompt, from location-token probabilities.

Greedy decoding gives one box per phrase. To offer alternatives, the prompt is followed by
``<object>``; the k most probable upper-left location tokens are taken from that step, and
each is completed with its most probable lower-right token (one batched step of k rows).
A box's score is ``sqrt(p(upper_left) * p(lower_right | upper_left))``, full-vocabulary
softmax, as for greedy boxes. Boxes are sorted by that score, so the first need not be the
greedy box (greedy fixes the upper-left cell first); the greedy box is among the k whenever
greedy decoding opens ``<object>`` and its upper-left cell is among the k most probable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .grounding import GRID, GroundedBox, GroundedPhrase, GroundedText, patch_indices_to_box
from .hf_types import Kosmos2Tokenizer
from .prompts import EncodedPrompt, encode_prompt
from .tasks import GenerationPolicy

NextTokenProbs = Callable[[Sequence[EncodedPrompt]], torch.Tensor]


@torch.inference_mode()
def rank_boxes(
    next_token_probs: NextTokenProbs,
    tokenizer: Kosmos2Tokenizer,
    prompt: str,
    name: str,
    policy: GenerationPolicy,
) -> GroundedText:
    """``name`` grounded to its ``policy.top_k`` best boxes, best first, those under
    ``policy.confidence_threshold`` dropped. ``next_token_probs(prompts)`` gives the softmax
    (R, vocab) float32 over the token after each of R prompts (same length) against one image:
    the backend's ``next_token_probs`` for one image. Two calls; the caller holds the engine's
    lock."""
    first_location = tokenizer.convert_tokens_to_ids("<patch_index_0000>")
    encoded = encode_prompt(tokenizer, prompt + "<object>")
    upper_probs = next_token_probs([encoded])[0]
    upper_p, upper = upper_probs[first_location : first_location + GRID * GRID].topk(policy.top_k)
    rows = [_extended(encoded, first_location + int(cell)) for cell in upper]
    lower_probs = next_token_probs(rows)
    boxes = []
    for ul, p_ul, probs in zip(upper.tolist(), upper_p.tolist(), lower_probs):
        cells = probs[first_location : first_location + GRID * GRID] * _valid_lower_right(ul, probs.device)
        lr = int(cells.argmax())
        boxes.append(GroundedBox(patch_indices_to_box(ul, lr), math.sqrt(p_ul * float(cells[lr]))))
    kept = tuple(sorted((b for b in boxes if b.score >= policy.confidence_threshold), key=lambda b: -b.score))
    phrases = (GroundedPhrase(name, (0, len(name)), kept),) if kept else ()
    return GroundedText(name, phrases)


def _extended(prompt: EncodedPrompt, token: int) -> EncodedPrompt:
    return EncodedPrompt(prompt.ids + (token,), prompt.image_mask + (0,), prompt.text_start)


def _valid_lower_right(upper_left: int, device) -> torch.Tensor:
    """1 on the cells at or right of and below ``upper_left``, else 0; (1024,)."""
    row, col = divmod(upper_left, GRID)
    cells = torch.arange(GRID * GRID, device=device)
    return ((cells // GRID >= row) & (cells % GRID >= col)).float()
