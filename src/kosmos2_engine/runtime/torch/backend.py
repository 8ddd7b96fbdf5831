"""The PyTorch backend: a ``Kosmos2ForConditionalGeneration`` on CPU or CUDA, decoded by our
static-cache decoder (:class:`~kosmos2_engine.runtime.torch.decoder.StaticDecoder`); on GPU in bf16 (fp16
where bf16 is unsupported), its one-token step compiled with CUDA graphs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...devices import default_dtype
from ...hf_types import Kosmos2Model
from ...prompts import EncodedPrompt
from ..protocol import DecodedBatch
from .decoder import BATCH_BUCKETS, StaticDecoder


def image_embeddings(model: Kosmos2Model, pixels: torch.Tensor) -> torch.Tensor:
    """Kosmos-2's image embeddings (B, 64, E) of ``pixels`` (B, 3, S, S): vision tower,
    post-layernorm, L2 normalisation, resampler projection."""
    hidden = model.vision_model(pixel_values=pixels)[0]
    hidden = torch.nn.functional.normalize(model.vision_model.model.post_layernorm(hidden), dim=-1)
    return model.image_to_text_projection(hidden)[0]


class TorchBackend:
    """:class:`~kosmos2_engine.runtime.protocol.Backend` over a transformers model.

    Args:
        model: a ``Kosmos2ForConditionalGeneration`` in eval mode (moved to ``device``).
        device: ``cpu``, ``cpu:0``, ``cuda`` or ``cuda:N``.
        compile_decoder: run the decoder's one-token step under ``torch.compile`` with CUDA
            graphs; None means on CUDA only.
    """

    weights: str | None = None

    def __init__(self, model: Kosmos2Model, device: str = "cpu", compile_decoder: bool | None = None) -> None:
        self.model = model.to(device)
        self.device = device
        self.decoder = self._new_decoder(compile_decoder)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def compiled(self) -> bool:
        return self.decoder.compiled

    @torch.inference_mode()
    def encode_images(self, pixel_chunks: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, 64, E) in the model's dtype on its device."""
        return torch.cat(
            [
                image_embeddings(self.model, torch.from_numpy(pixels).to(self.device, self.dtype))
                for pixels in pixel_chunks
            ]
        )

    def decode(
        self,
        image_embeds: torch.Tensor,
        prompts: Sequence[EncodedPrompt],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        image_rows: Sequence[int],
    ) -> DecodedBatch:
        return self.decoder.decode(image_embeds, prompts, max_new_tokens, stop_ids, image_rows)

    @torch.inference_mode()
    def next_token_probs(self, image_embeds: torch.Tensor, prompts: Sequence[EncodedPrompt], row: int) -> torch.Tensor:
        """By a plain forward of the transformers model (ranking is two steps: no cache needed)."""
        embeds = image_embeds[row : row + 1]
        ids = torch.tensor([prompt.ids for prompt in prompts], dtype=torch.long, device=embeds.device)
        output = self.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            image_embeds=embeds.expand(len(prompts), -1, -1).contiguous(),
            image_embeds_position_mask=torch.tensor([prompt.image_mask for prompt in prompts], device=embeds.device),
            use_cache=False,
        )
        return output.logits[:, -1].float().softmax(dim=-1).cpu()

    def batch_sizes_to_record(self, max_batch_size: int) -> list[int]:
        if not self.decoder.compiled:
            return []
        return [size for size in BATCH_BUCKETS if size <= self.decoder.bucket(max_batch_size)]

    def decode_reference(
        self,
        image_embeds: torch.Tensor,
        prompts: Sequence[EncodedPrompt],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        image_rows: Sequence[int],
    ) -> DecodedBatch:
        """:meth:`decode` by an eager decoder of its own, on the same weights (its caches freed
        when it returns): what compiled decoding must equal (the warm-up canary,
        :mod:`kosmos2_engine.canary`)."""
        eager = StaticDecoder(self.model, compile_step=False)
        try:
            return eager.decode(image_embeds, prompts, max_new_tokens, stop_ids, image_rows)
        finally:
            eager.release_caches()

    def set_dtype(self, dtype: torch.dtype, compile_decoder: bool) -> None:
        """Cast the weights in place (bf16 -> fp32 -> bf16 is exact); caches are rebuilt for it,
        decoding compiled per ``compile_decoder``."""
        self.decoder.release_caches()
        self.model.to(dtype=dtype)
        self.decoder = self._new_decoder(compile_decoder)

    def decode_eagerly(self) -> None:
        self.decoder.release_caches()
        self.decoder = self._new_decoder(False)

    def to(self, device: str, compile_decoder: bool | None = None) -> None:
        """Move the weights (in the default dtype of ``device``); caches and compiled graphs
        are rebuilt for it, compiled per ``compile_decoder`` (None: on CUDA only)."""
        self.decoder.release_caches()
        self.model.to(device=device, dtype=default_dtype(device))
        self.device = device
        self.decoder = self._new_decoder(compile_decoder)

    def _new_decoder(self, compile_decoder: bool | None) -> StaticDecoder:
        compile_step = self.device.startswith("cuda") if compile_decoder is None else compile_decoder
        return StaticDecoder(self.model, compile_step=compile_step)
