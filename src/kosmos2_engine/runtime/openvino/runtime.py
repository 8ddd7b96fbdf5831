"""Running the exported IR on CPU with numpy: the image encoder and a greedy decoder over the
stateful text decoder. No torch here.

The decoder keeps the torch engine's rules (:mod:`kosmos2_engine.runtime.torch.decoder`): prompts
right-aligned (left padding), explicit positions (``padding_idx + 1 + n`` for a row's n-th real
token), pads masked as keys, greedy argmax with its full-vocabulary softmax probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov

from ...prompts import EncodedPrompt, common_prefix_len
from ..protocol import DecodedBatch
from .export import DECODER, IMAGE_ENCODER

# Activations and the KV cache in float32 (OpenVINO's CPU defaults may pick bf16 activations
# and a u8 KV cache), so that the fp32 IR decodes exactly what the torch engine decodes.
CPU_CONFIG = {
    "INFERENCE_PRECISION_HINT": "f32",
    "KV_CACHE_PRECISION": "f32",
    "PERFORMANCE_HINT": "LATENCY",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
}


def compile_ir(folder: Path, threads: int | None = None) -> tuple[ov.CompiledModel, ov.CompiledModel]:
    """(image encoder, decoder) compiled for CPU from an export folder."""
    core = ov.Core()
    config = dict(CPU_CONFIG, **({"INFERENCE_NUM_THREADS": threads} if threads else {}))
    encoder = core.compile_model(str(Path(folder) / IMAGE_ENCODER), "CPU", config)
    decoder = core.compile_model(str(Path(folder) / DECODER), "CPU", config)
    return encoder, decoder


class OpenVINODecoder:
    """Greedy decoding over the compiled stateful decoder, by the rules of
    :class:`~kosmos2_engine.runtime.torch.decoder.StaticDecoder`, with numpy arrays where it has tensors.

    Args:
        compiled: the compiled ``decoder.xml``.
        pad_id: the text model's padding token id (also its position ``padding_idx``).
        width: the text model's embedding width E.
    """

    def __init__(self, compiled: ov.CompiledModel, pad_id: int, width: int):
        self.model = compiled
        self.pad_id = pad_id
        self.width = width
        self._request = compiled.create_infer_request()

    def decode(
        self,
        image_embeds: np.ndarray,
        prompts: Sequence[EncodedPrompt],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        image_rows: Sequence[int] | None = None,
    ) -> DecodedBatch:
        """Greedy continuations (B, T) of ``prompts``, prompt ``i`` against
        ``image_embeds[image_rows[i]]`` ((N, 64, E) float32); T <= ``max_new_tokens``, every row
        run until all rows have produced a stop token."""
        rows = list(range(len(prompts))) if image_rows is None else list(image_rows)
        token, prob, key_mask, position = self._prefill(image_embeds, prompts, rows)
        tokens, probs = [token], [prob]
        stops = np.asarray(list(stop_ids), dtype=np.int64)
        finished = np.isin(token, stops)
        for _ in range(1, max_new_tokens):
            if finished.all():
                break
            key_mask = np.concatenate([key_mask, np.ones((len(rows), 1), np.int64)], axis=1)
            token, prob = self._step(token[:, None], position[:, None], key_mask)
            tokens.append(token)
            probs.append(prob)
            finished |= np.isin(token, stops)
            position = position + 1
        return DecodedBatch(np.stack(tokens, axis=1), np.stack(probs, axis=1).astype(np.float32))

    def next_token_probs(
        self, image_embeds: np.ndarray, prompts: Sequence[EncodedPrompt], image_rows: Sequence[int]
    ) -> np.ndarray:
        """Softmax (R, vocab) float32 over the token after each prompt (one prefill, no decoding)."""
        logits = self._prefill_logits(image_embeds, prompts, list(image_rows))[0]
        return _softmax(logits)

    def _prefill(self, image_embeds, prompts, rows):
        if len(set(rows)) < len(rows):  # an image with several prompts: its prefix runs once
            logits, key_mask, position = self._prefill_sharing_prefixes(image_embeds, prompts, rows)
        else:
            logits, key_mask, position = self._prefill_logits(image_embeds, prompts, rows)
        token, prob = _greedy(logits)
        return token, prob, key_mask, position

    def _prefill_sharing_prefixes(self, image_embeds, prompts, rows):
        """As :meth:`_prefill_logits`, but the image part every prompt starts with
        (``<s> <image>`` and the image tokens) runs once per image; its keys and values are then
        copied into the state rows of that image's prompts, and only the rest of each prompt
        runs. The torch decoder does the same (``StaticDecoder._prefill``)."""
        prefix_len = common_prefix_len(prompts)
        images = sorted(set(rows))
        head = prompts[0]
        self._prefill_logits(
            image_embeds,
            [EncodedPrompt(head.ids[:prefix_len], head.image_mask[:prefix_len], head.text_start)] * len(images),
            images,
        )
        prefix = {state.name: state.state.data.copy() for state in self._request.query_state()}
        index_of = {image: index for index, image in enumerate(images)}
        picked = [index_of[row] for row in rows]
        self._request.reset_state()
        for state in self._request.query_state():
            state.state = ov.Tensor(np.ascontiguousarray(prefix[state.name][picked]))
        suffixes = [EncodedPrompt(p.ids[prefix_len:], p.image_mask[prefix_len:], 0) for p in prompts]
        return self._prefill_logits(image_embeds, suffixes, rows, prefix_len=prefix_len)

    def _prefill_logits(self, image_embeds, prompts, rows, prefix_len: int = 0):
        """Run every prompt, right-aligned, after ``prefix_len`` tokens already in the state
        (0: the state is reset first); returns last logits (B, V), the key mask (B, prefix +
        L) and the position (B,) the next token takes."""
        length = max(len(p.ids) for p in prompts)
        ids = np.full((len(prompts), length), self.pad_id, dtype=np.int64)
        image_mask = np.zeros((len(prompts), length), dtype=np.float32)
        features = np.zeros((len(prompts), length, self.width), dtype=np.float32)
        real = np.zeros((len(prompts), length), dtype=np.int64)
        for row, (prompt, image) in enumerate(zip(prompts, rows)):
            start = length - len(prompt.ids)
            ids[row, start:] = prompt.ids
            real[row, start:] = 1
            image_mask[row, start:] = prompt.image_mask
            if any(prompt.image_mask):  # a suffix after a shared prefix has no image tokens
                features[row, start:][np.asarray(prompt.image_mask, dtype=bool)] = image_embeds[image]
        positions = (np.cumsum(real, axis=1) + prefix_len) * real + self.pad_id
        key_mask = np.concatenate([np.ones((len(prompts), prefix_len), np.int64), real], axis=1)
        if not prefix_len:
            self._request.reset_state()
        logits = self._infer(ids, features, image_mask, positions, key_mask)
        return logits, key_mask, real.sum(axis=1) + prefix_len + self.pad_id + 1

    def _step(self, token, position, key_mask):
        batch = token.shape[0]
        logits = self._infer(
            token, np.zeros((batch, 1, self.width), np.float32), np.zeros((batch, 1), np.float32), position, key_mask
        )
        return _greedy(logits)

    def _infer(self, ids, features, image_mask, positions, key_mask) -> np.ndarray:
        self._request.infer(
            {
                "input_ids": ids,
                "image_features": features,
                "image_mask": image_mask,
                "position_ids": positions,
                "attention_mask": key_mask,
            }
        )
        return self._request.get_tensor("logits").data.copy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float32) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _greedy(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax token (B,) int64 and its softmax probability (B,) float32: the argmax's shifted
    logit is 0, so its probability is 1 / sum(exp(logits - max))."""
    shifted = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    return logits.argmax(axis=-1).astype(np.int64), 1.0 / np.exp(shifted).sum(axis=-1)
