"""Tasks: a policy and image sizes in, prompt jobs out; decoded jobs in, one result per image out.

Pure functions, no model. Coordinates: request regions are pixel ``[left, top, right, bottom]``
(inclusive); everything the engine returns is normalised ``xyxy`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .grounding import GroundedBox, GroundedText, box_to_patch_indices
from .policy import BOX_TASKS, GenerationPolicy, PixelBox, SettingsError
from .templates import (
    CAPTION_PROMPT,
    DETAILED_CAPTION_PROMPT,
    phrase_grounding_prompt,
    region_description_prompt,
    vqa_prompt,
    with_grounding_tag,
)

# Tasks whose text is the continuation only: their prompt is an instruction, not the text's start.
ANSWER_TASKS = ("detailed_caption", "region_description", "vqa")


@dataclass(frozen=True)
class PromptJob:
    """One prompt to decode against image ``image`` (its index in the request).

    ``name`` is the user's phrase that names the boxes of a grounding task, else None.
    """

    image: int
    prompt: str
    name: str | None = None


@dataclass(frozen=True)
class NamedBox:
    """A box found by the model: a class ``name``, normalised ``xyxy``, confidence in [0, 1]."""

    name: str
    xyxy: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class TaskResult:
    """What one image gets from one task.

    Attributes:
        task: the task that ran.
        text: the caption (``caption``, ``detailed_caption``, ``custom``) or the answer
            (``vqa``), tags removed; ``""`` for the other tasks.
        boxes: grounded boxes. Grounding tasks name them by the user's phrase, the others by
            the phrase in the text.
        descriptions: ``region_description``: one text per requested region, in order.
    """

    task: str
    text: str = ""
    boxes: tuple[NamedBox, ...] = ()
    descriptions: tuple[str, ...] = ()


def plan_jobs(policy: GenerationPolicy, sizes: Sequence[tuple[int, int]]) -> list[PromptJob]:
    """The prompts to decode for ``len(sizes)`` images of (width, height) ``sizes``, grouped by
    image. Raises :class:`SettingsError` for a region outside its image."""
    jobs = []
    for image, (width, height) in enumerate(sizes):
        jobs += [PromptJob(image, prompt, name) for prompt, name in _prompts(policy, width, height)]
    return jobs


def assemble(
    policy: GenerationPolicy, jobs: Sequence[PromptJob], views: Sequence[GroundedText], image_count: int
) -> list[TaskResult]:
    """One :class:`TaskResult` per image. ``views[i]`` is job i's grounded text: the whole
    text (prompt and continuation) for grounding tasks, caption and custom; the continuation
    only for :data:`ANSWER_TASKS`."""
    per_image: list[list[tuple[PromptJob, GroundedText]]] = [[] for _ in range(image_count)]
    for job, view in zip(jobs, views):
        per_image[job.image].append((job, view))
    return [_result(policy, decoded) for decoded in per_image]


def region_to_xyxy(region: PixelBox, width: int, height: int, field: str) -> tuple[float, ...]:
    """Inclusive pixel ``[left, top, right, bottom]`` to normalised xyxy; the region must lie in
    the ``width`` x ``height`` image (a right or bottom edge equal to the size is accepted)."""
    left, top, right, bottom = region
    if right > width or bottom > height:
        raise SettingsError(
            field,
            f"{[left, top, right, bottom]} lies outside the {width}x{height} "
            f"image: need 0 <= left <= right <= {width} and "
            f"0 <= top <= bottom <= {height}",
        )
    return left / width, top / height, min(right + 1, width) / width, min(bottom + 1, height) / height


def _prompts(policy: GenerationPolicy, width: int, height: int) -> list[tuple[str, str | None]]:
    task = policy.task
    if task == "phrase_grounding":
        return [(phrase_grounding_prompt(p), p) for p in policy.phrases]
    if task == "referring_expression":
        return [(phrase_grounding_prompt(policy.expression), policy.expression.strip())]
    if task == "region_description":
        if not policy.regions:
            raise SettingsError(
                "regions", "task 'region_description' needs regions: pixel [left, top, right, bottom] boxes"
            )
        return [
            (
                region_description_prompt(
                    *box_to_patch_indices(region_to_xyxy(region, width, height, f"regions[{i}]"))
                ),
                None,
            )
            for i, region in enumerate(policy.regions)
        ]
    single = {
        "caption": CAPTION_PROMPT,
        "detailed_caption": DETAILED_CAPTION_PROMPT,
        "vqa": vqa_prompt(policy.question or ""),
        "custom": with_grounding_tag(policy.prompt or ""),
    }
    return [(single[task], None)]


def _result(policy: GenerationPolicy, decoded: list[tuple[PromptJob, GroundedText]]) -> TaskResult:
    if policy.task in BOX_TASKS:
        boxes = [NamedBox(job.name, box.xyxy, box.score) for job, view in decoded for box in _first_phrase_boxes(view)]
        return TaskResult(policy.task, boxes=tuple(boxes))
    if policy.task == "region_description":
        return TaskResult(policy.task, descriptions=tuple(view.text for _, view in decoded))
    [(_, view)] = decoded
    boxes = [NamedBox(phrase.phrase, box.xyxy, box.score) for phrase in view.phrases for box in phrase.boxes]
    return TaskResult(policy.task, text=view.text, boxes=tuple(boxes))


def _first_phrase_boxes(view: GroundedText) -> tuple[GroundedBox, ...]:
    """The boxes of the prompt's phrase, which starts a grounding job's text; none when the
    model boxed something else first."""
    return view.phrases[0].boxes if view.phrases and view.phrases[0].span[0] == 0 else ()
