"""What decoding gives back: token ids to grounded text, and one :class:`TaskResult` per image.

Pure functions, no model (a tokenizer for the token strings). The task's row of the task table
decides how decoded prompts assemble into results. Boxes are normalised ``xyxy`` in [0, 1]
(see :mod:`.grounding`); requested regions are integer pixel ``[left, top, right, bottom]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .grounding import GroundedBox, GroundedText, drop_unconfident_boxes, parse_grounded_pieces
from .hf_types import Kosmos2Tokenizer
from .prompts import EncodedPrompt
from .tasks import GenerationPolicy, PromptJob, ResultKind


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


def stop_token_ids(tokenizer: Kosmos2Tokenizer, policy: GenerationPolicy) -> tuple[int, ...]:
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
    tokenizer: Kosmos2Tokenizer,
    prompt: EncodedPrompt,
    new_ids: Sequence[int],
    new_probs: Sequence[float],
    policy: GenerationPolicy,
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


@dataclass(frozen=True)
class NamedBox:
    """A box found by the model: a class ``name``, normalised ``xyxy``, confidence in [0, 1]."""

    name: str
    xyxy: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class TaskResult:
    """What one image gets from one task: everything a caller shows, nothing to parse.

    Attributes:
        task: the task that ran (its row in the task table says what ``text`` is).
        text: the caption (``caption``, ``detailed_caption``, ``custom``) or the answer
            (``vqa``), tags removed; ``""`` for the other tasks.
        boxes: grounded boxes. Grounding tasks name them by the user's phrase, the others by
            the phrase in the text.
        descriptions: ``region_description``: one text per requested region, in order.
        regions: ``region_description``: each requested region as integer pixel ``[left,
            top, right, bottom]`` inside the image (inclusive), in order.
    """

    task: str
    text: str = ""
    boxes: tuple[NamedBox, ...] = ()
    descriptions: tuple[str, ...] = ()
    regions: tuple[tuple[int, int, int, int], ...] = ()


def assemble(
    policy: GenerationPolicy, jobs: Sequence[PromptJob], views: Sequence[GroundedText], image_count: int
) -> list[TaskResult]:
    """One :class:`TaskResult` per image. ``views[i]`` is job i's grounded text: the
    continuation only when the task keeps only its answer, else prompt and continuation."""
    per_image: list[list[tuple[PromptJob, GroundedText]]] = [[] for _ in range(image_count)]
    for job, view in zip(jobs, views):
        per_image[job.image].append((job, view))
    return [_result(policy, decoded) for decoded in per_image]


def _result(policy: GenerationPolicy, decoded: list[tuple[PromptJob, GroundedText]]) -> TaskResult:
    kind = policy.row.result
    if kind == ResultKind.NAMED_BOXES:
        boxes = [
            NamedBox(job.prompt.name or "", box.xyxy, box.score)
            for job, view in decoded
            for box in _first_phrase_boxes(view)
        ]
        return TaskResult(policy.task, boxes=tuple(boxes))
    if kind == ResultKind.REGION_DESCRIPTIONS:
        return TaskResult(
            policy.task,
            descriptions=tuple(view.text for _, view in decoded),
            regions=tuple(job.prompt.region for job, _ in decoded if job.prompt.region is not None),
        )
    [(_, view)] = decoded
    boxes = [NamedBox(phrase.phrase, box.xyxy, box.score) for phrase in view.phrases for box in phrase.boxes]
    return TaskResult(policy.task, text=view.text, boxes=tuple(boxes))


def _first_phrase_boxes(view: GroundedText) -> tuple[GroundedBox, ...]:
    """The boxes of the prompt's phrase, which starts a grounding job's text; none when the
    model boxed something else first."""
    return view.phrases[0].boxes if view.phrases and view.phrases[0].span[0] == 0 else ()
