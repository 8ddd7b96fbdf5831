"""The two torch modules that are converted to OpenVINO IR (used at export time only).

Both run over the weights of a loaded ``Kosmos2ForConditionalGeneration`` with the torch
engine's own code (:func:`~kosmos2_engine.runtime.torch.decoder.transformer_block`,
:func:`~kosmos2_engine.runtime.torch.backend.image_embeddings`), so that an fp32 IR decodes the same tokens.

* :class:`ImageEncoderGraph`: ``pixel_values`` (B, 3, S, S) float32 -> image embeddings
  (B, 64, E): vision tower, post-layernorm, L2 normalise, resampler projection.
* :class:`DecoderGraph`: one call of the text decoder on S new tokens per row with explicit
  positions and a past of P cached tokens, returning the logits of the last position only and
  the K/V of all P + S tokens (which the export folds into OpenVINO state).
"""

from __future__ import annotations

import torch

from ...hf_types import Kosmos2Model
from ..torch.backend import image_embeddings
from ..torch.decoder import last_logits, transformer_block


class ImageEncoderGraph(torch.nn.Module):
    """:func:`~kosmos2_engine.runtime.torch.backend.image_embeddings` as a module."""

    def __init__(self, model: Kosmos2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return image_embeddings(self.model, pixel_values)


class DecoderGraph(torch.nn.Module):
    """Inputs (B rows, S new tokens, P past tokens, E width):

    * ``input_ids`` (B, S) int64;
    * ``image_features`` (B, S, E) float32 and ``image_mask`` (B, S) float32: where the mask is
      1 the feature replaces the token embedding (the 64 image tokens of a prompt), else unused;
    * ``position_ids`` (B, S) int64: sinusoidal positions (``padding_idx + 1 + n`` for a row's
      n-th real token), explicit so that left padding changes nothing;
    * ``attention_mask`` (B, P + S) int64: 1 for a real key, 0 for a pad;
    * ``past_key_values.{i}.key`` / ``.value`` (B, heads, P, head_dim) per layer.

    Outputs ``logits`` (B, vocab) of the last position and ``present.{i}.key`` / ``.value``
    (B, heads, P + S, head_dim). A query sees the real keys up to its own slot and always
    itself (a pad query keeps a finite softmax).
    """

    def __init__(self, model: Kosmos2Model) -> None:
        super().__init__()
        self.text = model.text_model.model
        self.lm_head = model.text_model.lm_head
        config = model.config.text_config
        self.heads = int(config.attention_heads)
        self.head_dim = int(config.embed_dim) // self.heads

    def forward(
        self,
        input_ids: torch.Tensor,
        image_features: torch.Tensor,
        image_mask: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        embeds = self.text.embed_tokens(input_ids)
        chosen = image_mask.unsqueeze(-1).to(embeds.dtype)
        embeds = embeds * (1 - chosen) + image_features.to(embeds.dtype) * chosen
        hidden = embeds * self.text.embed_scale + self.text.embed_positions.weights[position_ids]
        mask = _attention_mask(attention_mask, input_ids.shape[1])
        presents = []
        for index, block in enumerate(self.text.layers):

            def append(new_keys, new_values, past_keys=past[2 * index], past_values=past[2 * index + 1]):
                presents.extend([torch.cat([past_keys, new_keys], dim=2), torch.cat([past_values, new_values], dim=2)])
                return presents[-2], presents[-1]

            hidden = transformer_block(block, hidden, self.heads, self.head_dim, append, mask)
        return (last_logits(self.text, self.lm_head, hidden), *presents)


def _attention_mask(key_mask: torch.Tensor, queries: int) -> torch.Tensor:
    """(B, 1, S, P + S) bool from the (B, P + S) key mask: causal over real keys, plus itself."""
    total = key_mask.shape[1]
    query_slots = torch.arange(queries)[:, None] + (total - queries)
    key_slots = torch.arange(total)[None, :]
    causal = key_slots <= query_slots
    itself = key_slots == query_slots
    return ((causal[None] & key_mask.bool()[:, None, :]) | itself[None])[:, None]
