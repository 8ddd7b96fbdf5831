"""Masks carried through frames: the tiny SAM 2's video memory, through the engine's
:class:`~kosmos2_engine.MaskPropagator`, on clips of moving shapes it never saw."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kosmos2_engine import BoxMask, CheckpointError, MaskPropagator
from tests.support.app_harness import TINY_SAM2
from tests.tiny_sam2.video import clip

HELD_OUT_SEED = 31337  # neither training's seed nor its held-out one


@pytest.fixture(scope="module")
def propagator() -> MaskPropagator:
    return MaskPropagator.load(str(TINY_SAM2))


def _cropped(mask: np.ndarray) -> BoxMask:
    rows, columns = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    top, left = int(rows[0]), int(columns[0])
    return BoxMask(mask[top : rows[-1] + 1, left : columns[-1] + 1], (top, left), 1.0)


def _iou(found: BoxMask | None, truth: np.ndarray) -> float:
    if found is None:
        return 0.0
    whole = np.zeros_like(truth)
    top, left = found.origin
    whole[top : top + found.mask.shape[0], left : left + found.mask.shape[1]] = found.mask
    return float((whole & truth).sum() / (whole | truth).sum())


def test_the_tiny_sam2_follows_shapes_through_clips_it_never_saw(propagator):
    """16 clips of one shape or two gliding: from the key frame's true masks, the masks of the
    next four frames cover a lone shape with a mean IoU of at least 0.95, and each of two shapes
    with one of at least 0.75 (the tiny model's memory is 8 x 8 cells: it follows a lone shape
    nearly exactly, and two less tightly)."""
    rng, ious = random.Random(HELD_OUT_SEED), {1: [], 2: []}
    for _ in range(16):
        frames, masks = clip(rng, frames=5)
        propagation = propagator.follow(frames[0], [_cropped(mask) for mask in masks[0]])
        for frame, truths in zip(frames[1:], masks[1:]):
            found = propagation.next(frame)
            assert len(found) == len(truths)
            ious[len(truths)] += [_iou(mask, truth) for mask, truth in zip(found, truths)]
    assert ious[1] and ious[2]
    assert np.mean(ious[1]) >= 0.95 and np.mean(ious[2]) >= 0.75, (np.mean(ious[1]), np.mean(ious[2]))


def test_each_object_keeps_its_own_shape(propagator):
    """Two shapes followed together: each object's mask overlaps its own shape more than the
    other's on nine frames in ten (identity is carried, not just "whatever is not background")."""
    rng, own_wins, total = random.Random(HELD_OUT_SEED + 1), 0, 0
    while total < 32:
        frames, masks = clip(rng, frames=5)
        if len(masks[0]) != 2:
            continue
        propagation = propagator.follow(frames[0], [_cropped(mask) for mask in masks[0]])
        for frame, truths in zip(frames[1:], masks[1:]):
            for mask, truth, rival in zip(propagation.next(frame), truths, truths[::-1]):
                own_wins += _iou(mask, truth) > _iou(mask, rival)
                total += 1
    assert own_wins >= 0.9 * total, (own_wins, total)


def test_a_long_gap_holds_no_more_memory_than_sam2_reads_back(propagator):
    """Thirty frames followed: the propagation holds at most the memory SAM 2 reads back
    (``num_maskmem`` frames, ``max_object_pointers_in_encoder`` pointers; 16 here) and the key
    frame's, and still follows."""
    frames, masks = clip(random.Random(7), frames=2)
    propagation = propagator.follow(frames[0], [_cropped(mask) for mask in masks[0]])
    for _ in range(30):
        found = propagation.next(frames[1])
    config = propagator.model.config
    assert propagation.held_frames <= 1 + max(config.num_maskmem, config.max_object_pointers_in_encoder)  # + key
    assert all(_iou(mask, truth) >= 0.7 for mask, truth in zip(found, masks[1]))


def test_an_image_only_sam2_is_refused_with_why(tmp_path):
    """A checkpoint of SAM 2's image model has no memory weights: loading it for propagation is
    a ``CheckpointError`` that says so (transformers would fill the memory with random weights)."""
    from transformers import Sam2Model

    Sam2Model.from_pretrained(str(TINY_SAM2)).save_pretrained(tmp_path / "image-only")
    with pytest.raises(CheckpointError, match="is an image model"):
        MaskPropagator.load(str(tmp_path / "image-only"))
    with pytest.raises(CheckpointError, match="does not load"):
        MaskPropagator.check(str(tmp_path / "missing"))


def test_a_frame_of_another_size_or_an_empty_mask_is_refused(propagator):
    frames, masks = clip(random.Random(3), frames=2)
    with pytest.raises(ValueError, match="not empty"):
        propagator.follow(frames[0], [BoxMask(np.zeros((0, 0), bool), (0, 0), 0.0)])
    propagation = propagator.follow(frames[0], [_cropped(masks[0][0])])
    with pytest.raises(ValueError, match="frame of"):
        propagation.next(frames[1][:-1])
