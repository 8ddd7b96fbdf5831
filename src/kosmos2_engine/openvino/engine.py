"""The OpenVINO engine: the torch engine's interface (every task, ``prepare`` / ``execute`` for
the cross-request batcher, one vision pass per image, confidences from location-token
probabilities) over the exported IR, on CPU.

It loads only the processor and the config of the checkpoint, never its torch weights: images
are preprocessed to numpy, both IR graphs run in OpenVINO, and greedy decoding is numpy. Torch
is still imported, by the code shared with the torch engine (prompt planning, grounding, the
top-k ranking's arithmetic on a (R, vocab) array), but it runs no layer of the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, Kosmos2Config

from ..engine import ImageInput, Kosmos2Engine
from ..policy import GenerationPolicy
from .export import WEIGHT_FORMATS, cached_ir, checkpoint_folder, export_openvino
from .runtime import OpenVINODecoder, compile_ir

logger = logging.getLogger(__name__)


class OpenVINOEngine(Kosmos2Engine):
    """Kosmos-2 from an OpenVINO export folder (see :mod:`.export`), on CPU.

    Args:
        ir: the export folder (``image_encoder.xml``, ``decoder.xml``).
        processor: the checkpoint's ``Kosmos2Processor``.
        config: the checkpoint's ``Kosmos2Config``.
        weights: ``int8``, ``int4`` or ``fp32``, as exported (reported as the precision).
        max_batch_size: most prompts decoded (and images encoded) in one batch.
    """

    def __init__(self, ir: Path, processor, config, weights: str = "int8", max_batch_size: int = 16):
        self._set_up(processor, config, "cpu", max_batch_size, compile_decoder=False)
        self.ir, self.weights = Path(ir), weights
        self._encoder, compiled_decoder = compile_ir(self.ir)
        text = config.text_config
        self.decoder = OpenVINODecoder(compiled_decoder, int(text.pad_token_id), int(text.embed_dim))

    @classmethod
    def load(
        cls, checkpoint: str, weights: str = "int8", max_batch_size: int = 16, export_if_missing: bool = True
    ) -> OpenVINOEngine:
        """From a folder or hub id: its IR of ``weights`` (exported first when missing or out
        of date, if ``export_if_missing``), its processor and config."""
        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"OpenVINO weights must be one of {WEIGHT_FORMATS}, got '{weights}'")
        folder = checkpoint_folder(checkpoint)
        ir = export_openvino(str(folder), weights) if export_if_missing else cached_ir(folder, weights)
        if ir is None:
            raise FileNotFoundError(
                f"no up-to-date OpenVINO IR ({weights}) beside '{checkpoint}'; run "
                f"python -m kosmos2_engine.openvino.export {checkpoint} --weights {weights}"
            )
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        config = Kosmos2Config.from_pretrained(folder, local_files_only=True)
        return cls(ir, processor, config, weights, max_batch_size)

    @property
    def dtype(self) -> torch.dtype:
        """Activations are float32; see :attr:`weights` for how the weights are stored."""
        return torch.float32

    def to(self, device: str, dtype=None) -> OpenVINOEngine:
        if device not in ("cpu", "cpu:0"):
            raise ValueError(f"The OpenVINO engine runs on CPU only, not on '{device}'.")
        return self

    def encode_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Image embeddings (B, 64, E) float32, in chunks of ``max_batch_size`` images; the
        same preprocessing as the torch engine (squashed to a square, no crop)."""
        chunks = []
        for pixels in self._pixel_chunks(images, "np"):
            with self._lock:
                chunks.append(self._encoder(pixels.astype(np.float32))[0].copy())
        return np.concatenate(chunks)

    def _next_token_probs(self, embeds, row: int):
        def probs(prompts):
            softmax = self.decoder.next_token_probs(embeds, prompts, [row] * len(prompts))
            return torch.from_numpy(softmax)

        return probs

    def warm_up(self) -> None:
        """One short caption, so that the first request pays no start-up cost."""
        started = time.perf_counter()
        blank = np.full((self.image_size, self.image_size, 3), 127, dtype=np.uint8)
        self.caption([blank], GenerationPolicy(max_new_tokens=2))
        logger.info(
            "Kosmos-2 (OpenVINO, %s weights, %s) warmed up on CPU in %.1f s; batches of up to %d.",
            self.weights,
            self.ir,
            time.perf_counter() - started,
            self.max_batch_size,
        )
