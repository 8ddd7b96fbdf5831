"""Grounded output of Kosmos-2: token pieces and their probabilities in, phrases with boxes out.

Pure functions, no model. Conventions:

* A *normalised box* is ``(x1, y1, x2, y2)`` in [0, 1] relative to the image, ``x1 <= x2``
  and ``y1 <= y2``. Kosmos-2 squashes every image to a square, so it is equally relative to
  the original image.
* A *location token* ``<patch_index_k>`` names cell ``k = row * 32 + col`` of a 32x32 grid.
  A box is two of them: the upper-left and the lower-right cell.
* A *pixel box* is ``(left, top, right, bottom)`` in inclusive integer pixels of the image
  (pixel ``xyxy``). The engine uses these two conventions only; the serving adapter turns
  pixel boxes into Supervisely's ``[top, left, bottom, right]``.

A box's **confidence** is the geometric mean of the probabilities of its two location tokens,
each taken from the full-vocabulary softmax at the step that emitted it:
``sqrt(p(upper_left) * p(lower_right))``. Tokens that came from the prompt count as 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

GRID = 32
PHRASE_OPEN, PHRASE_CLOSE = "<phrase>", "</phrase>"
OBJECT_OPEN, OBJECT_CLOSE = "<object>", "</object>"
DELIMITER = "</delimiter_of_multi_objects/>"
END_OF_TEXT = "</s>"
_LOCATION = re.compile(r"^<patch_index_(\d{4})>$")
_OTHER_TAG = re.compile(r"^<[^<>]*>$")
# Tokens a decode with skip_special_tokens=True leaves out (as transformers' Kosmos-2 examples
# decode before post-processing): they vanish from the text and never end a phrase. A non-ASCII
# character the tokenizer does not know becomes <unk> inside a phrase ("a red caf<unk> square").
SKIPPED_TOKENS = frozenset({"<s>", "<pad>", "<unk>", "<mask>"})
_SENTENCEPIECE_SPACE = "\u2581"


@dataclass(frozen=True)
class GroundedBox:
    """One box of a phrase: a normalised ``xyxy`` box and its confidence in [0, 1]."""

    xyxy: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class GroundedPhrase:
    """A phrase of the text, its character ``span`` in :attr:`GroundedText.text`, and its boxes."""

    phrase: str
    span: tuple[int, int]
    boxes: tuple[GroundedBox, ...]


@dataclass(frozen=True)
class GroundedText:
    """Text with its tags removed and outer whitespace stripped, and its grounded phrases."""

    text: str
    phrases: tuple[GroundedPhrase, ...]


def location_index(piece: str) -> int | None:
    """Return k for ``<patch_index_k>`` (0..1023), else None."""
    match = _LOCATION.match(piece)
    if match is None or int(match.group(1)) >= GRID * GRID:
        return None
    return int(match.group(1))


def patch_indices_to_box(upper_left: int, lower_right: int) -> tuple[float, float, float, float]:
    """Normalised xyxy box of two grid cells, as transformers decodes it (cell centres, or full
    cells when both corners share a row or a column). Reversed corners are swapped, so the box
    is never inverted."""
    cell = 1.0 / GRID
    (x_a, y_a), (x_b, y_b) = divmod(upper_left, GRID)[::-1], divmod(lower_right, GRID)[::-1]
    x_lo, x_hi, y_lo, y_hi = min(x_a, x_b), max(x_a, x_b), min(y_a, y_b), max(y_a, y_b)
    if x_lo == x_hi or y_lo == y_hi:
        return x_lo * cell, y_lo * cell, (x_hi + 1) * cell, (y_hi + 1) * cell
    half = cell / 2
    return x_lo * cell + half, y_lo * cell + half, x_hi * cell + half, y_hi * cell + half


def box_to_patch_indices(xyxy: Sequence[float]) -> tuple[int, int]:
    """Grid cells of a normalised box's corners: the inverse of :func:`patch_indices_to_box`
    up to quantisation. Coordinates are clipped to [0, 1]."""
    x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in xyxy)
    col_a, row_a = min(math.floor(x1 * GRID), GRID - 1), min(math.floor(y1 * GRID), GRID - 1)
    col_b, row_b = max(math.ceil(x2 * GRID - 1), col_a), max(math.ceil(y2 * GRID - 1), row_a)
    return row_a * GRID + col_a, row_b * GRID + col_b


def box_to_pixel_xyxy(xyxy: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised xyxy box to inclusive integer pixel ``(left, top, right, bottom)`` in a
    ``width`` x ``height`` image, clipped to the image and never inverted."""
    x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in xyxy)
    left, top = min(math.floor(x1 * width), width - 1), min(math.floor(y1 * height), height - 1)
    right = min(max(math.ceil(x2 * width) - 1, left), width - 1)
    bottom = min(max(math.ceil(y2 * height) - 1, top), height - 1)
    return left, top, right, bottom


def parse_grounded_pieces(pieces: Sequence[str], probs: Sequence[float]) -> GroundedText:
    """Parse token pieces (as ``tokenizer.convert_ids_to_tokens`` gives them) into grounded text.

    ``pieces`` is the text after ``</image>``: the prompt's text tokens, then the generated
    ones. ``probs[i]`` is the probability the model gave ``pieces[i]`` (1.0 for prompt tokens).
    A phrase is grounded when ``<phrase> … </phrase>`` is followed at once by
    ``<object> L L (<delim> L L)* </object>``, as in transformers' ``post_process_generation``
    on text decoded with ``skip_special_tokens=True``: ``<s>``, ``<pad>``, ``<unk>`` and
    ``<mask>`` are dropped from the text and leave a phrase whole; any other tag inside a
    phrase ends it. A malformed object is dropped, and the piece that broke it is read anew
    (a ``<phrase>`` there starts a phrase); nothing is raised. Boxes with no phrase are
    dropped. Parsing stops at ``</s>``.
    """
    parser = _Parser()
    for piece, prob in zip(pieces, probs):
        if piece == END_OF_TEXT:
            break
        parser.feed(piece, float(prob))
    return parser.result()


def drop_unconfident_boxes(grounded: GroundedText, threshold: float) -> GroundedText:
    """Keep the boxes whose score is at least ``threshold``; phrases left with no box are dropped
    from :attr:`GroundedText.phrases` (their words stay in the text)."""
    phrases = []
    for phrase in grounded.phrases:
        boxes = tuple(box for box in phrase.boxes if box.score >= threshold)
        if boxes:
            phrases.append(replace(phrase, boxes=boxes))
    return replace(grounded, phrases=tuple(phrases))


class _Parser:
    """State machine behind :func:`parse_grounded_pieces`."""

    def __init__(self) -> None:
        self.text = ""
        self.phrase_start: int | None = None  # inside <phrase>: where its text starts
        self.closed_phrase: tuple[int, int] | None = None  # a phrase that may take an <object>
        self.object_phrase: tuple[int, int] | None = None
        self.in_object = False
        self.corners: list[tuple[int, float]] = []
        self.boxes: list[GroundedBox] = []
        self.entities: list[tuple[tuple[int, int], tuple[GroundedBox, ...]]] = []

    def feed(self, piece: str, prob: float) -> None:
        if piece in SKIPPED_TOKENS:
            return
        if self.in_object:
            self._feed_object(piece, prob)
        elif piece == OBJECT_OPEN:
            self.in_object, self.corners, self.boxes = True, [], []
            self.object_phrase, self.closed_phrase = self.closed_phrase, None
        elif piece == PHRASE_OPEN:
            self.phrase_start, self.closed_phrase = len(self.text), None
        elif piece == PHRASE_CLOSE:
            if self.phrase_start is not None and len(self.text) > self.phrase_start:
                self.closed_phrase = (self.phrase_start, len(self.text))
            self.phrase_start = None
        else:
            self.closed_phrase = None
            if _OTHER_TAG.match(piece):
                self.phrase_start = None  # a phrase holds words only
            else:
                self.text += piece.replace(_SENTENCEPIECE_SPACE, " ")

    def _feed_object(self, piece: str, prob: float) -> None:
        index = location_index(piece)
        if index is not None and len(self.corners) < 2:
            self.corners.append((index, prob))
        elif piece in (DELIMITER, OBJECT_CLOSE) and len(self.corners) == 2:
            (ul, p_ul), (lr, p_lr) = self.corners
            self.boxes.append(GroundedBox(patch_indices_to_box(ul, lr), math.sqrt(p_ul * p_lr)))
            self.corners = []
            if piece == OBJECT_CLOSE:
                self._close_object()
        else:  # malformed object: drop it, and read the piece that broke it as outside one
            self.in_object = False
            self.phrase_start = None
            self.feed(piece, prob)

    def _close_object(self) -> None:
        self.in_object = False
        if self.object_phrase is not None and self.boxes:
            self.entities.append((self.object_phrase, tuple(self.boxes)))

    def result(self) -> GroundedText:
        lead = len(self.text) - len(self.text.lstrip())
        phrases = []
        for (start, end), boxes in self.entities:
            raw = self.text[start:end]
            name = raw.strip()
            if not name:
                continue
            first = start + len(raw) - len(raw.lstrip()) - lead
            phrases.append(GroundedPhrase(name, (first, first + len(name)), boxes))
        return GroundedText(self.text.strip(), tuple(phrases))
