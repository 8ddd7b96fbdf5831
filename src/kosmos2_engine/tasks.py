"""Every Kosmos-2 task, one row each, and the policy of one request: what it asks, checked.

A :class:`Task` row says everything that differs between tasks:

* ``field``: the setting only this task reads (``phrases``, ``expression`` …) and ``check``,
  how that setting is checked on a policy;
* ``prompts``: the prompts it decodes for one image (one per phrase, per region …), from the
  templates of :mod:`.prompts`;
* ``stops_at_box``: decoding stops at ``</object>``: the box is the answer, and the model
  would otherwise go on into a caption;
* ``answer_only``: the text kept is the continuation alone (the prompt is an instruction);
  otherwise prompt and continuation are read together (the prompt starts the caption);
* ``text``: what its text is to a user (:class:`TextKind`): a caption, an answer, a
  description per region, or nothing;
* ``result``: how its decoded prompts make one result per image (:class:`ResultKind`): boxes
  named by the user's phrases, descriptions of the requested regions, or text with its
  grounded phrases;
* ``ranks_top_k``: ``top_k`` > 1 ranks candidate boxes instead of decoding greedily.

A :class:`GenerationPolicy` is frozen and checks itself on construction: the checks every task
shares, then its row's ``check``. Invalid values raise
:class:`~kosmos2_engine.validation.SettingsError`, which names the field and what is allowed.
:mod:`.settings` builds a policy from raw request settings; :func:`plan_jobs` turns a policy
and the image sizes into the prompts to decode.

Policy checks, settings, planning, decoding, and the serving adapter's tags all read this
table; adding a task is adding a row (and its tests). Coordinates: request regions are pixel
``[left, top, right, bottom]`` (inclusive).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .grounding import box_to_patch_indices
from .prompts import (
    CAPTION_PROMPT,
    DETAILED_CAPTION_PROMPT,
    phrase_grounding_prompt,
    region_description_prompt,
    vqa_prompt,
    with_grounding_tag,
)
from .validation import (
    MAX_ITEMS,
    MAX_NEW_TOKENS_LIMIT,
    MAX_PHRASES,
    MAX_PROMPT_CHARS,
    MAX_TOP_K,
    SettingsError,
    check_int_range,
    check_unit_interval,
    check_user_text,
)

PixelBox = tuple[float, float, float, float]  # pixel [left, top, right, bottom], inclusive


class TextKind(StrEnum):
    """What a task's text is to a user (the name of its tag in the adapter)."""

    CAPTION = "caption"
    ANSWER = "answer"
    DESCRIPTION = "description"


class ResultKind(StrEnum):
    """How a task's decoded prompts make one result per image."""

    NAMED_BOXES = "named_boxes"  # each prompt's boxes, named by the user's phrase
    REGION_DESCRIPTIONS = "region_descriptions"  # one description per requested region
    GROUNDED_TEXT = "grounded_text"  # one text and the boxes of its phrases


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
    text: TextKind | None = None
    result: ResultKind = ResultKind.GROUNDED_TEXT
    ranks_top_k: bool = False


def _require(policy: GenerationPolicy, field: str) -> None:
    if getattr(policy, field) in (None, ()):
        raise SettingsError(field, f"is required by task '{policy.task}'")


def required_text(policy: GenerationPolicy, field: str) -> str:
    """The text setting ``field`` of ``policy`` (``expression``, ``question``, ``prompt``);
    :class:`SettingsError` when the task needs it and it is missing."""
    value = getattr(policy, field)
    if not isinstance(value, str):
        raise SettingsError(field, f"is required by task '{policy.task}'")
    return value


def _check_phrases(policy: GenerationPolicy) -> None:
    _require(policy, "phrases")
    if len(policy.phrases) > MAX_PHRASES:
        raise SettingsError("phrases", f"at most {MAX_PHRASES} phrases, got {len(policy.phrases)}")
    for i, phrase in enumerate(policy.phrases):
        check_user_text(f"phrases[{i}]", phrase)
    if policy.phrase_names and len(policy.phrase_names) != len(policy.phrases):
        raise SettingsError(
            "phrases", f"{len(policy.phrase_names)} names for {len(policy.phrases)} phrases: give one name per phrase"
        )
    for i, name in enumerate(policy.phrase_names):
        if not name.strip() or len(name) > MAX_PROMPT_CHARS:
            raise SettingsError(f"phrases[{i}]", f"a name must be 1..{MAX_PROMPT_CHARS} characters, got {name!r}")


def _phrase_prompts(policy: GenerationPolicy, width: int, height: int) -> list[PlannedPrompt]:
    names = policy.phrase_names or policy.phrases
    return [PlannedPrompt(phrase_grounding_prompt(phrase), name) for phrase, name in zip(policy.phrases, names)]


def _check_expression(policy: GenerationPolicy) -> None:
    check_user_text("expression", required_text(policy, "expression"))


def _check_question(policy: GenerationPolicy) -> None:
    check_user_text("question", required_text(policy, "question"))


def _check_prompt(policy: GenerationPolicy) -> None:
    prompt = required_text(policy, "prompt")
    if not prompt.strip():
        raise SettingsError("prompt", "must not be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SettingsError("prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")


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


def region_in_image(
    region: PixelBox, width: int, height: int, field: str
) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]:
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


def _expression_prompt(expression: str) -> PlannedPrompt:
    return PlannedPrompt(phrase_grounding_prompt(expression), expression.strip())


def _nothing(policy: GenerationPolicy) -> None:
    pass


TASK_TABLE: dict[str, Task] = {
    task.name: task
    for task in (
        Task("caption", None, _nothing, lambda p, w, h: [PlannedPrompt(CAPTION_PROMPT)], text=TextKind.CAPTION),
        Task(
            "detailed_caption",
            None,
            _nothing,
            lambda p, w, h: [PlannedPrompt(DETAILED_CAPTION_PROMPT)],
            answer_only=True,
            text=TextKind.CAPTION,
        ),
        Task(
            "phrase_grounding",
            "phrases",
            _check_phrases,
            _phrase_prompts,
            stops_at_box=True,
            result=ResultKind.NAMED_BOXES,
        ),
        Task(
            "referring_expression",
            "expression",
            _check_expression,
            lambda p, w, h: [_expression_prompt(required_text(p, "expression"))],
            stops_at_box=True,
            result=ResultKind.NAMED_BOXES,
            ranks_top_k=True,
        ),
        Task(
            "region_description",
            "regions",
            _check_regions,
            _region_prompts,
            answer_only=True,
            text=TextKind.DESCRIPTION,
            result=ResultKind.REGION_DESCRIPTIONS,
        ),
        Task(
            "vqa",
            "question",
            _check_question,
            lambda p, w, h: [PlannedPrompt(vqa_prompt(required_text(p, "question")))],
            answer_only=True,
            text=TextKind.ANSWER,
        ),
        Task(
            "custom",
            "prompt",
            _check_prompt,
            lambda p, w, h: [PlannedPrompt(with_grounding_tag(required_text(p, "prompt")))],
            text=TextKind.CAPTION,
        ),
    )
}
TASKS = tuple(TASK_TABLE)
TASK_OF_FIELD = {task.field: task.name for task in TASK_TABLE.values() if task.field}


@dataclass(frozen=True)
class GenerationPolicy:
    """One request: the task, its inputs, and how to decode. Greedy decoding, always.

    Attributes:
        task: one of :data:`TASKS`.
        phrases: ``phrase_grounding``: 1..100 phrases or class names, each grounded on its own.
        phrase_names: ``phrase_grounding``: the name of each phrase's boxes (a class name for
            the phrase that finds it), in the order of ``phrases``; empty: each phrase names
            its own boxes.
        expression: ``referring_expression``: the expression to box.
        question: ``vqa``: the question to answer.
        regions: ``region_description``: 1..32 pixel ``[left, top, right, bottom]`` boxes,
            inclusive.
        prompt: ``custom``: raw text after the image; ``<grounding>`` is added when missing.
        top_k: ``referring_expression``: how many candidate boxes to return, 1..10.
        max_new_tokens: decode at most this many tokens per prompt, 1..512.
        confidence_threshold: boxes whose confidence is below this are dropped, 0..1.
    """

    task: str = "caption"
    phrases: tuple[str, ...] = ()
    phrase_names: tuple[str, ...] = ()
    expression: str | None = None
    question: str | None = None
    regions: tuple[PixelBox, ...] = ()
    prompt: str | None = None
    top_k: int = 1
    max_new_tokens: int = 64
    confidence_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in TASK_TABLE:
            raise SettingsError("task", f"must be one of {', '.join(TASKS)}; got {self.task!r}")
        check_int_range("top_k", self.top_k, 1, MAX_TOP_K)
        check_int_range("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        check_unit_interval("confidence_threshold", self.confidence_threshold)
        self.row.check(self)

    @property
    def row(self) -> Task:
        """The task's row of the task table."""
        return TASK_TABLE[self.task]

    @property
    def ranks_boxes(self) -> bool:
        """Whether candidate boxes are ranked (``top_k`` > 1 on a task that takes it)."""
        return self.row.ranks_top_k and self.top_k > 1


@dataclass(frozen=True)
class PromptJob:
    """One prompt to decode against image ``image`` (its index in the request)."""

    image: int
    prompt: PlannedPrompt


def plan_jobs(policy: GenerationPolicy, sizes: Sequence[tuple[int, int]]) -> list[PromptJob]:
    """The prompts to decode for ``len(sizes)`` images of (width, height) ``sizes``, grouped by
    image. Raises :class:`~kosmos2_engine.validation.SettingsError` for a region outside its image."""
    return [
        PromptJob(image, prompt)
        for image, (width, height) in enumerate(sizes)
        for prompt in policy.row.prompts(policy, width, height)
    ]
