"""How decode work is cut into batches: by prompt length, and smaller on out-of-memory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Output = TypeVar("Output")


def length_sorted_batches(lengths: Sequence[int], max_batch_size: int) -> list[list[int]]:
    """Indices ``0..len(lengths)-1`` sorted by length and cut into batches of at most
    ``max_batch_size``: prompts of similar length share a batch, so little is padded."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    return [order[start : start + max_batch_size] for start in range(0, len(order), max_batch_size)]


def run_splitting_on_oom(run: Callable[[list[Item]], list[Output]], items: list[Item]) -> list[Output]:
    """``run(items)``; when the device runs out of memory, the batch is halved and each half
    run again (recursively), so no item is lost. One warning per split; a single item that
    does not fit raises the out-of-memory error."""
    try:
        return run(items)
    except torch.OutOfMemoryError:
        if len(items) == 1:
            raise
        half = len(items) // 2
        logger.warning(
            "Out of device memory decoding a batch of %d; retrying as %d + %d.", len(items), half, len(items) - half
        )
        _free_cached_memory()
    return run_splitting_on_oom(run, items[:half]) + run_splitting_on_oom(run, items[half:])


def _free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
