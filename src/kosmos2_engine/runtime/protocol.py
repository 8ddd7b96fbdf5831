"""What the engine asks of a model runtime: the :class:`Backend` protocol.

The engine (:class:`~kosmos2_engine.engine.Kosmos2Engine`) preprocesses images, plans and
checks prompts, cuts decoding into batches, parses grounded text and ranks boxes; a backend
runs the network. Two implement it: :class:`~kosmos2_engine.runtime.torch.backend.TorchBackend`
(PyTorch, CPU or CUDA, our static-cache decoder) and
:class:`~kosmos2_engine.runtime.openvino.backend.OpenVINOBackend` (OpenVINO IR on CPU, numpy).
Embeddings are the backend's own type (a tensor on its device, or a numpy array) and are only
handed back to it; indexing them with a list of rows works for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..prompts import EncodedPrompt


@dataclass(frozen=True)
class DecodedBatch:
    """Greedy continuations of a batch, on CPU.

    Attributes:
        tokens: (B, T) int64, T <= max_new_tokens; a row's tokens after its first stop token
            are junk and must be cut by the caller.
        probs: (B, T) float32, softmax probability of each chosen token over the full vocabulary.
    """

    tokens: torch.Tensor | np.ndarray
    probs: torch.Tensor | np.ndarray


class Backend(Protocol):
    """A Kosmos-2 network on one device.

    Attributes:
        device: ``cpu``, ``cpu:0`` or ``cuda[:N]``.
        dtype: the dtype of its activations (``torch.float32`` for OpenVINO).
        weights: how its weights are stored when compressed (``int8``, ``int4``), else None.
        compiled: whether decoding runs compiled graphs that warm-up should record.
    """

    @property
    def device(self) -> str: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def weights(self) -> str | None: ...

    @property
    def compiled(self) -> bool: ...

    def encode_images(self, pixel_chunks: Sequence[np.ndarray]) -> Any:
        """Image embeddings (B, 64, E) of float32 ``pixel_values`` chunks (n, 3, S, S), in order."""

    def decode(
        self,
        image_embeds: Any,
        prompts: Sequence[EncodedPrompt],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        image_rows: Sequence[int],
    ) -> DecodedBatch:
        """Greedy continuations, prompt ``i`` against ``image_embeds[image_rows[i]]``; every row
        runs until all have produced a stop token or ``max_new_tokens`` tokens."""

    def next_token_probs(self, image_embeds: Any, prompts: Sequence[EncodedPrompt], row: int) -> torch.Tensor:
        """Softmax (R, vocab) float32 on CPU over the token after each of R prompts (one length)
        against image ``row``."""

    def batch_sizes_to_record(self, max_batch_size: int) -> list[int]:
        """Batch sizes whose compiled graphs warm-up should record; [] when nothing compiles."""

    def decode_eagerly(self) -> None:
        """Stop compiling (after a compiler failure or a canary mismatch): decode eagerly."""

    def to(self, device: str, compile_decoder: bool | None = None) -> None:
        """Move to ``device`` (compiling decoding per ``compile_decoder``, None: where the
        backend compiles by default); a backend that cannot move raises ``ValueError``."""
