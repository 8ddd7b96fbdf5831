"""Every Kosmos-2 task, one row each, and the prompt templates the rows use.

A :class:`Task` row says everything that differs between tasks:

* ``field``: the setting only this task reads (``phrases``, ``expression`` …) and ``check``,
  how that setting is checked on a policy;
* ``prompts``: the prompts it decodes for one image (one per phrase, per region …);
* ``stops_at_box``: decoding stops at ``</object>``: the box is the answer, and the model
  would otherwise go on into a caption;
* ``answer_only``: the text kept is the continuation alone (the prompt is an instruction);
  otherwise prompt and continuation are read together (the prompt starts the caption);
* ``text``: what its text is to a user: ``caption``, ``answer``, a ``description`` per
  region, or nothing;
* ``result``: how its decoded prompts make one result per image: boxes named by the user's
  phrases, descriptions of the requested regions, or text with its grounded phrases;
* ``ranks_top_k``: ``top_k`` > 1 ranks candidate boxes instead of decoding greedily.

Policy checks, settings, planning, decoding, and the serving adapter's tags all read this
table; adding a task is adding a row (and its tests).

Templates are the model card's and the paper's. User text goes in verbatim: it is checked to
hold no tag first (:func:`~kosmos2_engine.validation.find_markup`). Location tokens name cells
of the 32x32 grid (``k = row * 32 + col``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .grounding import box_to_patch_indices
from .validation import MAX_ITEMS, MAX_PROMPT_CHARS, SettingsError, check_user_text

if TYPE_CHECKING:
    from .policy import GenerationPolicy

CAPTION_PROMPT = "<grounding> An image of"
DETAILED_CAPTION_PROMPT = "<grounding> Describe this image in detail:"
GROUNDING_TAG = "<grounding>"

PixelBox = tuple[float, float, float, float]  # pixel [left, top, right, bottom], inclusive


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
class PlannedPrompt:
    """One prompt for one image.

    Attributes:
        text: the prompt after the image tokens.
        name: the user's phrase that names this prompt's boxes (grounding tasks), else None.
        region: the requested region this prompt describes, as integer pixel ``[left, top,
            right, bottom]`` (inclusive, inside the image), else None.
    """

    text: str
    name: str | None = None
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Task:
    """One row of the task table; see the module docstring."""

    name: str
    field: str | None
    check: Callable[[GenerationPolicy], None]
    prompts: Callable[[GenerationPolicy, int, int], list[PlannedPrompt]]
    stops_at_box: bool = False
    answer_only: bool = False
    text: str | None = None
    result: str = "grounded_text"  # "named_boxes" | "region_descriptions" | "grounded_text"
    ranks_top_k: bool = False


def _require(policy: GenerationPolicy, field: str) -> None:
    if getattr(policy, field) in (None, ()):
        raise SettingsError(field, f"is required by task '{policy.task}'")


def _check_phrases(policy: GenerationPolicy) -> None:
    _require(policy, "phrases")
    if len(policy.phrases) > MAX_ITEMS:
        raise SettingsError("phrases", f"at most {MAX_ITEMS} phrases, got {len(policy.phrases)}")
    for i, phrase in enumerate(policy.phrases):
        check_user_text(f"phrases[{i}]", phrase)


def _check_expression(policy: GenerationPolicy) -> None:
    _require(policy, "expression")
    check_user_text("expression", policy.expression)


def _check_question(policy: GenerationPolicy) -> None:
    _require(policy, "question")
    check_user_text("question", policy.question)


def _check_prompt(policy: GenerationPolicy) -> None:
    _require(policy, "prompt")
    if not policy.prompt.strip():
        raise SettingsError("prompt", "must not be empty")
    if len(policy.prompt) > MAX_PROMPT_CHARS:
        raise SettingsError("prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(policy.prompt)}")


def _check_regions(policy: GenerationPolicy) -> None:
    if not policy.regions:
        raise SettingsError(
            "regions",
            "task 'region_description' needs regions: pixel [left, top, right, bottom] boxes; to describe "
            "an image's existing labels, call /describe_regions with its image_id",
        )
    if len(policy.regions) > MAX_ITEMS:
        raise SettingsError("regions", f"at most {MAX_ITEMS} regions, got {len(policy.regions)}")
    for i, (left, top, right, bottom) in enumerate(policy.regions):
        if not all(math.isfinite(v) and v >= 0 for v in (left, top, right, bottom)):
            raise SettingsError(f"regions[{i}]", "coordinates must be finite and >= 0")
        if left > right or top > bottom:
            raise SettingsError(
                f"regions[{i}]",
                "must be [left, top, right, bottom] with left <= right and top <= bottom, "
                f"got {[left, top, right, bottom]}",
            )


def region_in_image(region: PixelBox, width: int, height: int, field: str):
    """(integer pixel ``[left, top, right, bottom]`` inside the image, normalised xyxy) of an
    inclusive pixel region, which must lie in the ``width`` x ``height`` image (a right or
    bottom edge equal to the size is accepted); :class:`SettingsError` naming ``field`` else."""
    left, top, right, bottom = region
    if right > width or bottom > height:
        raise SettingsError(
            field,
            f"{[left, top, right, bottom]} lies outside the {width}x{height} image: need "
            f"0 <= left <= right <= {width} and 0 <= top <= bottom <= {height}",
        )

    def clip(value, size):
        return min(max(value, 0), size - 1)

    pixels = (
        clip(math.floor(left), width),
        clip(math.floor(top), height),
        clip(math.ceil(right), width),
        clip(math.ceil(bottom), height),
    )
    xyxy = (left / width, top / height, min(right + 1, width) / width, min(bottom + 1, height) / height)
    return pixels, xyxy


def _region_prompts(policy: GenerationPolicy, width: int, height: int) -> list[PlannedPrompt]:
    prompts = []
    for i, region in enumerate(policy.regions):
        pixels, xyxy = region_in_image(region, width, height, f"regions[{i}]")
        prompts.append(PlannedPrompt(region_description_prompt(*box_to_patch_indices(xyxy)), region=pixels))
    return prompts


def _nothing(policy: GenerationPolicy) -> None:
    pass


TASK_TABLE: dict[str, Task] = {
    task.name: task
    for task in (
        Task("caption", None, _nothing, lambda p, w, h: [PlannedPrompt(CAPTION_PROMPT)], text="caption"),
        Task(
            "detailed_caption",
            None,
            _nothing,
            lambda p, w, h: [PlannedPrompt(DETAILED_CAPTION_PROMPT)],
            answer_only=True,
            text="caption",
        ),
        Task(
            "phrase_grounding",
            "phrases",
            _check_phrases,
            lambda p, w, h: [PlannedPrompt(phrase_grounding_prompt(phrase), phrase) for phrase in p.phrases],
            stops_at_box=True,
            result="named_boxes",
        ),
        Task(
            "referring_expression",
            "expression",
            _check_expression,
            lambda p, w, h: [PlannedPrompt(phrase_grounding_prompt(p.expression), p.expression.strip())],
            stops_at_box=True,
            result="named_boxes",
            ranks_top_k=True,
        ),
        Task(
            "region_description",
            "regions",
            _check_regions,
            _region_prompts,
            answer_only=True,
            text="description",
            result="region_descriptions",
        ),
        Task(
            "vqa",
            "question",
            _check_question,
            lambda p, w, h: [PlannedPrompt(vqa_prompt(p.question))],
            answer_only=True,
            text="answer",
        ),
        Task(
            "custom",
            "prompt",
            _check_prompt,
            lambda p, w, h: [PlannedPrompt(with_grounding_tag(p.prompt))],
            text="caption",
        ),
    )
}
TASKS = tuple(TASK_TABLE)
TASK_OF_FIELD = {task.field: task.name for task in TASK_TABLE.values() if task.field}
