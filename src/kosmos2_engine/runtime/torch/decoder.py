"""Greedy decoding of Kosmos-2's text model with a static KV cache and explicit positions.

Our own loop over the weights of ``Kosmos2TextForCausalLM`` (nothing is copied), in the style
of gpt-fast's ``prefill`` / ``decode_one_token``:

* **Positions are explicit.** A row with ``n`` real prompt tokens feeds its ``t``-th generated
  token at sinusoidal position ``padding_idx + 1 + n + t``, whatever its left padding. (HF's
  Kosmos-2 numbers it by the cache length, pads included, so a left-padded row decodes
  differently from the same prompt alone; here it does not, and prompts of any lengths share
  a batch.)
* **The KV cache is static**: ``(B, heads, max_len, head_dim)`` per layer, allocated once per
  (batch size, length) bucket and written in place; a boolean ``(B, max_len)`` mask says which
  slots hold real keys. Every decode step of a call has the same shapes, so it can run under
  ``torch.compile(mode="reduce-overhead", dynamic=True)``: a CUDA graph per shape, two compiles
  for every shape (batch 1, and one with symbolic batch and length).
* **The image prefix runs once per image.** Every prompt starts with ``<s> <image>`` and the 64
  image tokens; when an image has several prompts in a batch, that part runs once for it and
  its keys and values are copied into the rows of its prompts (20 phrases: one prefix).
* **No host sync per step**: argmax and the chosen token's probability stay on the device;
  whether every row has stopped is read once every ``STOP_CHECK_EVERY`` steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ...hf_types import Kosmos2Model, Kosmos2Submodule
from ...prompts import EncodedPrompt, common_prefix_len
from ..protocol import DecodedBatch

STOP_CHECK_EVERY = 8
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LENGTH_MULTIPLE = 64


class StaticCache:
    """Per-layer key and value buffers ``(batch, heads, length, head_dim)`` plus the ``(batch,
    length)`` bool mask of slots that hold a real (non-pad) key. Reused across calls."""

    def __init__(
        self, layers: int, batch: int, heads: int, length: int, head_dim: int, dtype: torch.dtype, device: torch.device
    ):
        shape = (batch, heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.valid = torch.zeros((batch, length), dtype=torch.bool, device=device)
        if device.type == "cuda":  # fixed addresses: CUDA graphs then update them in place
            for tensor in (*self.keys, *self.values, self.valid):
                torch._dynamo.mark_static_address(tensor)


class StaticDecoder:
    """Greedy decoder over a ``Kosmos2ForConditionalGeneration``'s text model.

    Args:
        model: the full model (its ``text_model`` is used), in eval mode, on its device.
        compile_step: run the one-token step under ``torch.compile(mode="reduce-overhead",
            fullgraph=True, dynamic=True)``; batch sizes are then padded up to
            :data:`BATCH_BUCKETS` so that a handful of CUDA graphs serve every batch.
    """

    def __init__(self, model: Kosmos2Model, compile_step: bool = False) -> None:
        self.text = model.text_model.model
        self.lm_head = model.text_model.lm_head
        config = model.config.text_config
        self.heads = int(config.attention_heads)
        self.head_dim = int(config.embed_dim) // self.heads
        self.pad_id = int(config.pad_token_id)
        self.compiled = compile_step
        self._caches: dict[tuple[int, int], StaticCache] = {}
        self._step = self._decode_step
        if compile_step:
            # Batch and cache length symbolic: one compile serves every bucket and length (batch 1,
            # which dynamo specialises, compiles once more); CUDA graphs are recorded per shape.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self._step = torch.compile(self._decode_step, mode="reduce-overhead", fullgraph=True, dynamic=True)

    def bucket(self, batch: int) -> int:
        """Rows actually run for a batch of ``batch`` prompts (itself unless compiled)."""
        if not self.compiled:
            return batch
        return next((size for size in BATCH_BUCKETS if size >= batch), batch)

    @torch.inference_mode()
    def decode(
        self,
        image_embeds: torch.Tensor,
        prompts: Sequence[EncodedPrompt],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        image_rows: Sequence[int] | None = None,
    ) -> DecodedBatch:
        """Greedy continuations of ``prompts``, prompt ``i`` against ``image_embeds[image_rows[i]]``
        (default: row ``i``).

        ``image_embeds`` is (N, 64, embed_dim) in the model's dtype on its device. The image part
        of the prompts is run once per image, not once per prompt (see :meth:`_prefill`). Every
        row runs until all rows have produced one of ``stop_ids`` (checked every
        :data:`STOP_CHECK_EVERY` steps) or ``max_new_tokens`` tokens.
        """
        rows = len(prompts)
        image_rows = list(range(rows)) if image_rows is None else list(image_rows)
        padding = self.bucket(rows) - rows
        prompts, image_rows = list(prompts) + [prompts[-1]] * padding, image_rows + [image_rows[-1]] * padding
        prompt_len = max(len(p.ids) for p in prompts)
        cache = self._cache(len(prompts), _round_up(prompt_len + max_new_tokens, LENGTH_MULTIPLE))
        token, prob, next_position = self._prefill(cache, image_embeds, image_rows, prompts, prompt_len)
        tokens, probs = self._decode_loop(cache, token, prob, next_position, prompt_len, max_new_tokens, stop_ids)
        return DecodedBatch(tokens[:rows].cpu(), probs[:rows].float().cpu())

    def _decode_loop(self, cache, token, prob, position, prompt_len, max_new_tokens, stop_ids):
        """Tokens and probabilities (B, T) on the device, T <= ``max_new_tokens``."""
        stops = torch.tensor(list(stop_ids), dtype=torch.long, device=token.device)
        tokens, probs = [token], [prob]
        finished = torch.isin(token, stops)
        slot = torch.tensor([prompt_len], device=token.device)
        for step in range(1, max_new_tokens):
            if step % STOP_CHECK_EVERY == 0 and bool(finished.all()):
                break
            token, prob = self._step(cache.keys, cache.values, cache.valid, token, position, slot)
            token, prob = token.clone(), prob.clone()  # graph outputs are overwritten on replay
            tokens.append(token)
            probs.append(prob)
            finished |= torch.isin(token, stops)
            position = position + 1
            slot = slot + 1
        return torch.stack(tokens, dim=1), torch.stack(probs, dim=1)

    def _cache(self, batch: int, length: int) -> StaticCache:
        """The cache for this shape, most recently used kept last. Eager decoding keeps one
        (any batch size can come, and a cache of the real model at batch 16 is about 1 GB);
        compiled decoding keeps one per recorded graph, up to two per batch bucket."""
        key = (batch, length)
        cache = self._caches.pop(key, None)
        if cache is None:
            limit = 2 * len(BATCH_BUCKETS) if self.compiled else 1
            while len(self._caches) >= limit:
                self._caches.pop(next(iter(self._caches)))
            weight = self.lm_head.weight
            cache = StaticCache(
                len(self.text.layers), batch, self.heads, length, self.head_dim, weight.dtype, weight.device
            )
        self._caches[key] = cache
        return cache

    def release_caches(self) -> None:
        """Free every KV cache (e.g. before moving the model to another device)."""
        self._caches.clear()

    def _prefill(self, cache: StaticCache, image_embeds, image_rows, prompts, prompt_len):
        """Fill cache slots ``[0, prompt_len)`` with the prompts' keys and values.

        Every prompt starts with the same image part, ``<s> <image> [64 image tokens]``. When
        some image has several prompts, that part runs once per image (:meth:`_prefix_cache`)
        and is copied into the rows of that image's prompts at slots ``[0, P)``; the rest of each
        prompt (from ``</image>`` on) follows at ``[P, prompt_len)``. With one prompt per image,
        P is 0 and each whole prompt runs in one pass. Prompts are right-aligned, pads between:
        positions are explicit, so pads may sit anywhere. Returns the first generated token and
        its probability (B,), and the position (B,) that token will be fed at.
        """
        device = image_embeds.device
        picked = torch.tensor(image_rows, device=device)
        shared = len(set(image_rows)) < len(image_rows)
        prefix_len = common_prefix_len(prompts) if shared else 0
        if shared:
            prefix_keys, prefix_values = self._prefix_cache(image_embeds, prompts[0], prefix_len)
            for layer in range(len(cache.keys)):
                cache.keys[layer][:, :, :prefix_len] = prefix_keys[layer][picked]
                cache.values[layer][:, :, :prefix_len] = prefix_values[layer][picked]
        length = prompt_len - prefix_len
        ids, real = _right_aligned([p.ids[prefix_len:] for p in prompts], length, self.pad_id, device)
        image_mask, _ = _right_aligned([p.image_mask[prefix_len:] for p in prompts], length, 0, device)
        positions = (real.cumsum(dim=1) + prefix_len) * real + self.pad_id
        if shared:  # the image tokens are in the prefix
            hidden = self._embed(ids, positions)
        else:
            hidden = self._embed(ids, positions, image_mask.bool(), image_embeds[picked])
        cache.valid.zero_()
        cache.valid[:, :prefix_len] = True
        cache.valid[:, prefix_len:prompt_len] = real
        logits = self._last_logits(
            hidden,
            cache.keys,
            cache.values,
            torch.arange(prefix_len, prompt_len, device=device),
            _suffix_mask(cache.valid, prefix_len, prompt_len)[:, None],
        )
        token, prob = _greedy(logits)
        return token, prob, real.sum(dim=1) + prefix_len + self.pad_id + 1

    def _prefix_cache(self, image_embeds, prompt: EncodedPrompt, prefix_len: int):
        """Keys and values, per layer (N, heads, prefix_len, head_dim), of the first
        ``prefix_len`` tokens of ``prompt`` (no padding) for each of the N images."""
        images, device = image_embeds.shape[0], image_embeds.device
        ids = torch.tensor([prompt.ids[:prefix_len]], device=device).expand(images, -1)
        image_mask = torch.tensor([prompt.image_mask[:prefix_len]], dtype=torch.bool, device=device)
        positions = (torch.arange(1, prefix_len + 1, device=device) + self.pad_id).expand(images, -1)
        hidden = self._embed(ids, positions, image_mask.expand(images, -1), image_embeds)
        shape = (images, self.heads, prefix_len, self.head_dim)
        keys = [torch.empty(shape, dtype=hidden.dtype, device=device) for _ in self.text.layers]
        values = [torch.empty(shape, dtype=hidden.dtype, device=device) for _ in self.text.layers]
        causal = torch.ones(prefix_len, prefix_len, dtype=torch.bool, device=device).tril()
        self._blocks(hidden, keys, values, torch.arange(prefix_len, device=device), causal)
        return keys, values

    def _decode_step(self, keys, values, valid, token, position, slot):
        """One token per row: ``token``, ``position`` (B,) int64, ``slot`` (1,) int64 cache
        index. Returns the next token and its probability (B,)."""
        hidden = self._embed(token[:, None], position[:, None])
        valid.index_fill_(1, slot, True)
        logits = self._last_logits(hidden, keys, values, slot, valid[:, None, None, :])
        return _greedy(logits)

    def _embed(self, ids, positions, image_mask=None, image_embeds=None) -> torch.Tensor:
        """Hidden states (B, S, E) of ``ids`` at sinusoidal ``positions`` (both (B, S) int64),
        with ``image_embeds`` (rows of 64) put where ``image_mask`` (B, S) bool is set, in order;
        all scaled as Kosmos-2 does (token and image embeddings, not positions)."""
        embeds = self.text.embed_tokens(ids)
        if image_mask is not None:
            embeds[image_mask] = image_embeds.to(embeds.dtype).reshape(-1, embeds.shape[-1])
        return embeds * self.text.embed_scale + self.text.embed_positions.weights[positions]

    def _blocks(self, hidden, keys, values, slots, mask) -> torch.Tensor:
        """``hidden`` (B, S, E) through every block, writing K/V at cache ``slots`` (S,);
        ``mask`` broadcasts to (B, 1, S, cache length), bool."""
        for block, key_cache, value_cache in zip(self.text.layers, keys, values):

            def write(new_keys, new_values, key_cache=key_cache, value_cache=value_cache):
                return key_cache.index_copy_(2, slots, new_keys), value_cache.index_copy_(2, slots, new_values)

            hidden = transformer_block(block, hidden, self.heads, self.head_dim, write, mask)
        return hidden

    def _last_logits(self, hidden, keys, values, slots, mask) -> torch.Tensor:
        """:meth:`_blocks`, then the logits of the last position only (B, vocab)."""
        return last_logits(self.text, self.lm_head, self._blocks(hidden, keys, values, slots, mask))


def transformer_block(
    block: Kosmos2Submodule,
    hidden: torch.Tensor,
    heads: int,
    head_dim: int,
    keys_and_values: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """One ``Kosmos2TextBlock`` on ``hidden`` (B, S, E): pre-norm self-attention with an inner
    layer norm, then the FFN. ``keys_and_values(keys, values)`` receives this step's keys and
    values (B, heads, S, head_dim), stores them (our decoder writes them into its static cache,
    the exported graph appends them to its past) and returns every key and value to attend to
    (B, heads, L, head_dim); ``mask`` broadcasts to (B, 1, S, L), bool."""
    attention = block.self_attn
    batch, length, width = hidden.shape
    x = block.self_attn_layer_norm(hidden)

    def split(projection):
        return projection(x).view(batch, length, heads, head_dim).transpose(1, 2)

    keys, values = keys_and_values(split(attention.k_proj), split(attention.v_proj))
    attended = F.scaled_dot_product_attention(
        split(attention.q_proj), keys, values, attn_mask=mask, scale=attention.scaling
    )
    attended = attended.transpose(1, 2).reshape(batch, length, width)
    hidden = hidden + attention.out_proj(attention.inner_attn_ln(attended))
    return hidden + block.ffn(block.final_layer_norm(hidden))


def last_logits(text: Kosmos2Submodule, lm_head: Kosmos2Submodule, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (B, vocab) of the last position of ``hidden`` (B, S, E): final layer norm, ``lm_head``."""
    return lm_head(text.layer_norm(hidden[:, -1]))


def _greedy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax token (B,) int64 and its softmax probability (B,) float32, from logits (B, V)."""
    probs = logits.float().softmax(dim=-1)
    prob, token = probs.max(dim=-1)
    return token, prob


def _right_aligned(suffixes: Sequence[Sequence[int]], length: int, pad_id: int, device):
    """(B, length) int64 values and real-token mask (bool), each suffix at the right end,
    ``pad_id`` before."""
    ids = torch.full((len(suffixes), length), pad_id, dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        ids[row, length - len(suffix) :] = torch.tensor(suffix)
    starts = length - torch.tensor([len(suffix) for suffix in suffixes])
    real = torch.arange(length)[None] >= starts[:, None]
    return ids.to(device), real.to(device)


def _suffix_mask(valid: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(B, stop - start, max_len) bool: query slot ``start + q`` sees the valid keys at slots up
    to its own, and always itself (so a pad query has a finite softmax)."""
    queries, length = stop - start, valid.shape[1]
    causal = torch.ones(queries, length, dtype=torch.bool, device=valid.device).tril(diagonal=start)
    itself = torch.zeros(queries, length, dtype=torch.bool, device=valid.device)
    itself[torch.arange(queries), torch.arange(start, stop)] = True
    return (causal[None] & valid[:, None, :]) | itself[None]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
