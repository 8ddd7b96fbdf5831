"""Decoded token ids to parsed, grounded text (pure: a tokenizer, no model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .grounding import GroundedText, drop_unconfident_boxes, parse_grounded_pieces
from .policy import GenerationPolicy
from .token_layout import EncodedPrompt


@dataclass(frozen=True)
class Generation:
    """One decoded prompt.

    Attributes:
        grounded: the prompt's text and the continuation, parsed.
        answer: the continuation alone, parsed (what the model wrote).
        token_ids: the generated ids, up to and including the first stop token if one came.
    """

    grounded: GroundedText
    answer: GroundedText
    token_ids: tuple[int, ...]


def stop_token_ids(tokenizer, policy: GenerationPolicy) -> tuple[int, ...]:
    """End-of-text, and ``</object>`` for a task whose row says it stops at the box."""
    stops = [tokenizer.eos_token_id]
    if policy.row.stops_at_box:
        stops.append(tokenizer.convert_tokens_to_ids("</object>"))
    return tuple(stops)


def until_stop(ids: Sequence[int], probs: Sequence[float], stops: Sequence[int]) -> tuple[list[int], list[float]]:
    """``ids`` and their ``probs`` up to and including the first stop token (the rest is junk
    decoded after the row finished)."""
    ids = list(ids)
    end = next((i + 1 for i, token in enumerate(ids) if token in stops), len(ids))
    return ids[:end], list(probs[:end])


def to_generation(
    tokenizer, prompt: EncodedPrompt, new_ids: Sequence[int], new_probs: Sequence[float], policy: GenerationPolicy
) -> Generation:
    """Parse ``prompt`` + ``new_ids`` (already cut at the first stop); boxes under
    ``policy.confidence_threshold`` are dropped. Prompt tokens count as certain (1.0)."""
    prompt_ids = list(prompt.ids[prompt.text_start :])
    prompt_pieces = _pieces(tokenizer, prompt_ids)
    new_pieces = _pieces(tokenizer, new_ids)
    new_probs = list(new_probs)
    grounded = parse_grounded_pieces(prompt_pieces + new_pieces, [1.0] * len(prompt_ids) + new_probs)
    answer = parse_grounded_pieces(new_pieces, new_probs)
    threshold = policy.confidence_threshold
    return Generation(
        drop_unconfident_boxes(grounded, threshold), drop_unconfident_boxes(answer, threshold), tuple(new_ids)
    )


def _pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """Token strings of ``ids``; an id past the tokenizer's vocabulary (a model whose output
    layer is larger than its tokenizer) reads as the unknown token."""
    return [piece if piece is not None else tokenizer.unk_token for piece in tokenizer.convert_ids_to_tokens(list(ids))]
