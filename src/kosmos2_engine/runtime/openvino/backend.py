"""The OpenVINO backend: Kosmos-2's exported IR (:mod:`.export`) on CPU, with numpy.

It loads only the processor and the config of the checkpoint, never its torch weights: the
engine preprocesses images to numpy, both IR graphs run in OpenVINO, and greedy decoding is
numpy (:mod:`.runtime`). Torch is imported by the engine code shared with the PyTorch backend
(prompt planning, grounding, the top-k ranking's arithmetic on a (R, vocab) array), but it
runs no layer of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, Kosmos2Config

from ...engine import Kosmos2Engine
from ...hf_types import Kosmos2ModelConfig
from ...prompts import EncodedPrompt
from ..protocol import DecodedBatch
from .export import WEIGHT_FORMATS, cached_ir, checkpoint_folder, export_openvino
from .runtime import OpenVINODecoder, compile_ir


class OpenVINOBackend:
    """:class:`~kosmos2_engine.runtime.protocol.Backend` over an OpenVINO export folder, on CPU.

    Args:
        ir: the export folder (``image_encoder.xml``, ``decoder.xml``).
        config: the checkpoint's ``Kosmos2Config``.
        weights: ``int8``, ``int4``, ``fp32`` or ``int8-act``, as exported.
    """

    device: str = "cpu"
    dtype: torch.dtype = torch.float32  # activations; the weights are stored as ``weights`` says
    compiled: bool = False

    def __init__(self, ir: Path, config: Kosmos2ModelConfig, weights: str = "int8") -> None:
        self.ir = Path(ir)
        self.weights: str | None = None if weights == "fp32" else weights
        self._encoder, compiled_decoder = compile_ir(self.ir)
        text = config.text_config
        self.decoder = OpenVINODecoder(compiled_decoder, int(text.pad_token_id), int(text.embed_dim))

    def encode_images(self, pixel_chunks: Sequence[np.ndarray]) -> np.ndarray:
        """(B, 64, E) float32."""
        return np.concatenate([self._encoder(pixels)[0].copy() for pixels in pixel_chunks])

    def decode(
        self,
        image_embeds: np.ndarray,
        prompts: Sequence[EncodedPrompt],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        image_rows: Sequence[int],
    ) -> DecodedBatch:
        return self.decoder.decode(image_embeds, prompts, max_new_tokens, stop_ids, image_rows)

    def next_token_probs(self, image_embeds: np.ndarray, prompts: Sequence[EncodedPrompt], row: int) -> torch.Tensor:
        return torch.from_numpy(self.decoder.next_token_probs(image_embeds, prompts, [row] * len(prompts)))

    def batch_sizes_to_record(self, max_batch_size: int) -> list[int]:
        return []

    def decode_eagerly(self) -> None:
        pass

    def to(self, device: str, compile_decoder: bool | None = None) -> None:
        if device not in ("cpu", "cpu:0"):
            raise ValueError(f"The OpenVINO engine runs on CPU only, not on '{device}'.")


def load_openvino_engine(
    checkpoint: str, weights: str = "int8", max_batch_size: int = 16, export_if_missing: bool = True
) -> Kosmos2Engine:
    """An engine on the OpenVINO backend for a folder or hub id: its IR of ``weights``
    (exported first when missing or out of date, if ``export_if_missing``), its processor and
    config."""
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"OpenVINO weights must be one of {WEIGHT_FORMATS}, got '{weights}'")
    folder = checkpoint_folder(checkpoint)
    ir = export_openvino(str(folder), weights) if export_if_missing else cached_ir(folder, weights)
    if ir is None:
        raise FileNotFoundError(
            f"no up-to-date OpenVINO IR ({weights}) beside '{checkpoint}'; run "
            f"python -m kosmos2_engine.runtime.openvino.export {checkpoint} --weights {weights}"
        )
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    config = Kosmos2Config.from_pretrained(folder, local_files_only=True)
    return Kosmos2Engine(OpenVINOBackend(ir, config, weights), processor, config, max_batch_size)
