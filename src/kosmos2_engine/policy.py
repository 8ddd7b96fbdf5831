"""The generation policy: what one request asks of the model, validated in one place.

A :class:`GenerationPolicy` is frozen and checks itself on construction: the checks every task
shares here, the task's own in its row of :data:`~kosmos2_engine.task_table.TASK_TABLE`.
Invalid values raise :class:`~kosmos2_engine.validation.SettingsError`, which names the field
and what is allowed. :mod:`.settings` builds a policy from raw request settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from .task_table import TASK_TABLE, TASKS, PixelBox, Task
from .validation import MAX_NEW_TOKENS_LIMIT, MAX_TOP_K, SettingsError, check_int_range, check_unit_interval


@dataclass(frozen=True)
class GenerationPolicy:
    """One request: the task, its inputs, and how to decode. Greedy decoding, always.

    Attributes:
        task: one of :data:`~kosmos2_engine.task_table.TASKS`.
        phrases: ``phrase_grounding``: 1..32 phrases or class names, each grounded on its own.
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
