"""A policy and image sizes in, prompt jobs out; decoded jobs in, one result per image out.

Pure functions, no model; the task's row of the task table decides both directions.
Coordinates: request regions are pixel ``[left, top, right, bottom]`` (inclusive); grounded
boxes the engine returns are normalised ``xyxy`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .grounding import GroundedBox, GroundedText
from .policy import GenerationPolicy
from .task_table import PlannedPrompt


@dataclass(frozen=True)
class PromptJob:
    """One prompt to decode against image ``image`` (its index in the request)."""

    image: int
    prompt: PlannedPrompt


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


def plan_jobs(policy: GenerationPolicy, sizes: Sequence[tuple[int, int]]) -> list[PromptJob]:
    """The prompts to decode for ``len(sizes)`` images of (width, height) ``sizes``, grouped by
    image. Raises :class:`~kosmos2_engine.validation.SettingsError` for a region outside its image."""
    return [
        PromptJob(image, prompt)
        for image, (width, height) in enumerate(sizes)
        for prompt in policy.row.prompts(policy, width, height)
    ]


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
    if kind == "named_boxes":
        boxes = [
            NamedBox(job.prompt.name, box.xyxy, box.score) for job, view in decoded for box in _first_phrase_boxes(view)
        ]
        return TaskResult(policy.task, boxes=tuple(boxes))
    if kind == "region_descriptions":
        return TaskResult(
            policy.task,
            descriptions=tuple(view.text for _, view in decoded),
            regions=tuple(job.prompt.region for job, _ in decoded),
        )
    [(_, view)] = decoded
    boxes = [NamedBox(phrase.phrase, box.xyxy, box.score) for phrase in view.phrases for box in phrase.boxes]
    return TaskResult(policy.task, text=view.text, boxes=tuple(boxes))


def _first_phrase_boxes(view: GroundedText) -> tuple[GroundedBox, ...]:
    """The boxes of the prompt's phrase, which starts a grounding job's text; none when the
    model boxed something else first."""
    return view.phrases[0].boxes if view.phrases and view.phrases[0].span[0] == 0 else ()
