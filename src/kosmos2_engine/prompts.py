"""Prompts: the templates of every task (the model card's and the paper's), and their token
layout, built without an image so that one image's embeddings serve many prompts.

Kosmos-2's processor lays a prompt out as::

    <s> <image> [64 image placeholders] </image> <prompt text tokens>

and ``image_embeds_position_mask`` is 1 exactly on the 64 placeholders, whose embeddings the
model overwrites with the image embeddings. :func:`encode_prompt` builds the same ids as
``Kosmos2Processor(images=..., text=...)`` (a test checks this) from the text alone.

User text goes into a template verbatim: it is checked to hold no tag first
(:func:`~kosmos2_engine.validation.find_markup`). Location tokens name cells of the 32x32 grid
(``k = row * 32 + col``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .hf_types import Kosmos2Tokenizer

NUM_IMAGE_TOKENS = 64

CAPTION_PROMPT = "<grounding> An image of"
DETAILED_CAPTION_PROMPT = "<grounding> Describe this image in detail:"
GROUNDING_TAG = "<grounding>"


def phrase_grounding_prompt(phrase: str) -> str:
    """Ground one phrase (also a referring expression): the model answers with its box(es)."""
    return f"{GROUNDING_TAG}<phrase> {phrase.strip()}</phrase>"


def region_description_prompt(upper_left: int, lower_right: int) -> str:
    """Describe the region between two grid cells: "It<box> is" and the model goes on."""
    return (
        f"{GROUNDING_TAG}<phrase> It</phrase><object><patch_index_{upper_left:04d}>"
        f"<patch_index_{lower_right:04d}></object> is"
    )


def vqa_prompt(question: str) -> str:
    """A grounded question; the model writes the answer after "Answer:"."""
    return f"{GROUNDING_TAG} Question: {question.strip()} Answer:"


def with_grounding_tag(prompt: str) -> str:
    """Prefix ``<grounding>`` unless the prompt already starts with it."""
    stripped = prompt.lstrip()
    return stripped if stripped.startswith(GROUNDING_TAG) else f"{GROUNDING_TAG} {stripped}"


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids of one prompt and its image-placeholder mask, both of the same length.

    ``text_start`` is the index of the first token after ``</image>``.
    """

    ids: tuple[int, ...]
    image_mask: tuple[int, ...]
    text_start: int


@dataclass(frozen=True)
class PromptBatch:
    """Left-padded batch: ``input_ids``, ``attention_mask``, ``image_embeds_position_mask``,
    each a (B, L) int64 tensor on CPU."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_embeds_position_mask: torch.Tensor


def encode_prompt(tokenizer: Kosmos2Tokenizer, text: str, num_image_tokens: int = NUM_IMAGE_TOKENS) -> EncodedPrompt:
    """Ids of ``<s> <image> [placeholders] </image> text``, as the Kosmos-2 processor makes them.

    Placeholder ids are ``unk_token_id + 1 …``, the processor's ``first_image_token_id``.
    """
    first_image_id = tokenizer.unk_token_id + 1
    head = [
        tokenizer.bos_token_id,
        tokenizer.convert_tokens_to_ids("<image>"),
        *range(first_image_id, first_image_id + num_image_tokens),
        tokenizer.convert_tokens_to_ids("</image>"),
    ]
    text_ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    mask = [0, 0] + [1] * num_image_tokens + [0] * (1 + len(text_ids))
    return EncodedPrompt(tuple(head + text_ids), tuple(mask), len(head))


def left_pad(prompts: Sequence[EncodedPrompt], pad_id: int) -> PromptBatch:
    """Pad prompts on the left to a common length (Kosmos-2 is only correct with left padding)."""
    length = max(len(p.ids) for p in prompts)
    ids, attention, image_mask = [], [], []
    for prompt in prompts:
        pad = length - len(prompt.ids)
        ids.append([pad_id] * pad + list(prompt.ids))
        attention.append([0] * pad + [1] * len(prompt.ids))
        image_mask.append([0] * pad + list(prompt.image_mask))
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.long)
    return PromptBatch(as_tensor(ids), as_tensor(attention), as_tensor(image_mask))


def common_prefix_len(prompts: Sequence[EncodedPrompt]) -> int:
    """Length of the image part every prompt shares, ``<s> <image> [64 image tokens]``: up to
    but not including ``</image>``, so that every prompt keeps at least one token of its own."""
    prefix_len = prompts[0].text_start - 1
    head = prompts[0].ids[:prefix_len]
    if any(p.text_start - 1 != prefix_len or p.ids[:prefix_len] != head for p in prompts):
        raise ValueError("prompts must share the image part <s> <image> [image tokens]")
    return prefix_len
