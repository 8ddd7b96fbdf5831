"""Prompt templates of the Kosmos-2 tasks, as the model card and the paper write them.

Each function returns the text that follows the image tokens. User text goes in verbatim; it
must already be checked to hold no tag (see :func:`kosmos2_engine.policy.find_markup`).
Location tokens name cells of the 32x32 grid (``k = row * 32 + col``).
"""

from __future__ import annotations

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
