"""Training examples of every Kosmos-2 task for one synthetic scene: (prompt, target) pairs.

Prompts come from the engine's own templates (:mod:`kosmos2_engine.tasks`), so the tiny
model learns exactly the prompts the server sends. Targets use the grounding markup
``<phrase> text</phrase><object><patch_index_UL><patch_index_LR></object>``; the end-of-text
token is appended when the examples are packed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from kosmos2_engine import box_to_patch_indices
from kosmos2_engine.tasks import (
    CAPTION_PROMPT,
    DETAILED_CAPTION_PROMPT,
    phrase_grounding_prompt,
    region_description_prompt,
    vqa_prompt,
)

from .scenes import DrawnShape


@dataclass(frozen=True)
class Example:
    """``prompt`` goes after the image tokens; ``target`` is what the model learns to write."""

    prompt: str
    target: str


def box_markup(shape: DrawnShape) -> str:
    """``<object><patch_index_UL><patch_index_LR></object>`` of the shape's box."""
    upper_left, lower_right = box_to_patch_indices(shape.xyxy)
    return f"<object><patch_index_{upper_left:04d}><patch_index_{lower_right:04d}></object>"


def grounded(text: str, shape: DrawnShape) -> str:
    return f"<phrase> {text}</phrase>{box_markup(shape)}"


def caption_target(shapes: Sequence[DrawnShape]) -> str:
    """ " a red circle<box> and a blue square<box>." (left to right)."""
    return " and".join(grounded(s.phrase, s) for s in shapes) + "."


def detailed_caption_target(shapes: Sequence[DrawnShape]) -> str:
    if len(shapes) == 1:
        return f" There is{grounded(shapes[0].phrase, shapes[0])} in the image."
    left, right = shapes
    return f" There is{grounded(left.phrase, left)} on the left and{grounded(right.phrase, right)} on the right."


def phrase_names(shape: DrawnShape) -> list[str]:
    """Ways a user names this shape as a class or phrase."""
    c, s = shape.colour, shape.shape
    return [f"a {c} {s}", f"the {c} {s}", f"{c} {s}", s, f"the {s}"]


def referring_expressions(shapes: Sequence[DrawnShape]) -> list[tuple[str, DrawnShape]]:
    """Expressions that pick one shape of a two-shape scene by side or by a unique colour."""
    if len(shapes) < 2:
        return []
    left, right = shapes
    found = [
        (f"the {noun} on the {side}", shape)
        for noun in ("shape", "object")
        for side, shape in (("left", left), ("right", right))
    ]
    if left.colour != right.colour:
        found += [(f"the {s.colour} {noun}", s) for s in shapes for noun in ("shape", "object")]
    return found


def vqa_examples(rng: random.Random, shapes: Sequence[DrawnShape]) -> list[Example]:
    shape = rng.choice(list(shapes))
    examples = [
        Example(
            vqa_prompt(f"What colour is the {shape.shape}?"),
            f"{grounded(f'The {shape.shape}', shape)} is {shape.colour}.",
        )
    ]
    if sum(s.colour == shape.colour for s in shapes) == 1:
        subject = f"The {shape.colour} object"
        examples.append(
            Example(
                vqa_prompt(f"What shape is the {shape.colour} object?"),
                f"{grounded(subject, shape)} is a {shape.shape}.",
            )
        )
    return examples


def scene_examples(rng: random.Random, shapes: Sequence[DrawnShape]) -> list[Example]:
    """One example of each task for a scene of one or two shapes (left to right)."""
    target_shape = rng.choice(list(shapes))
    described = rng.choice(list(shapes))
    examples = [
        Example(CAPTION_PROMPT, caption_target(shapes)),
        Example(DETAILED_CAPTION_PROMPT, detailed_caption_target(shapes)),
        Example(phrase_grounding_prompt(rng.choice(phrase_names(target_shape))), box_markup(target_shape)),
        Example(region_description_prompt(*box_to_patch_indices(described.xyxy)), f" {described.phrase}."),
    ]
    expressions = referring_expressions(shapes)
    if expressions:
        expression, shape = rng.choice(expressions)
        examples.append(Example(phrase_grounding_prompt(expression), box_markup(shape)))
    return examples + vqa_examples(rng, shapes)
