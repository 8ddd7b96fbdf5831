"""The reference decoding path: transformers' own ``generate``, one prompt per call.

This is how the public app decodes, and what every optimised path must equal token for token
(parity tests) and beat (``bench/``). Not used to serve.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from kosmos2_engine.prompts import EncodedPrompt, left_pad
from kosmos2_engine.runtime.protocol import DecodedBatch


class _ChosenTokenProbability(LogitsProcessor):
    """Records, per step, the largest softmax value over the vocabulary (greedy's choice)."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(scores.float().softmax(dim=-1).amax(dim=-1))
        return scores


@torch.inference_mode()
def hf_greedy(
    model,
    tokenizer,
    image_embeds: torch.Tensor,
    prompt: EncodedPrompt,
    max_new_tokens: int,
    stop_ids: list[int],
    min_new_tokens: int = 0,
) -> DecodedBatch:
    """Greedy continuation of one prompt by ``model.generate`` against ``image_embeds``
    (1, 64, D) on the model's device. ``min_new_tokens`` forces the length (benchmarks).

    Returns (1, T) tokens and probabilities on CPU, T <= ``max_new_tokens``.
    """
    batch = left_pad([prompt], tokenizer.pad_token_id)
    device = image_embeds.device
    recorder = _ChosenTokenProbability()
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=list(stop_ids),
        bos_token_id=tokenizer.bos_token_id,
    )
    sequences = model.generate(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        image_embeds_position_mask=batch.image_embeds_position_mask.to(device),
        image_embeds=image_embeds,
        generation_config=config,
        logits_processor=LogitsProcessorList([recorder]),
    )
    tokens = sequences[:, batch.input_ids.shape[1] :].cpu()
    probs = torch.stack(recorder.steps, dim=1).float().cpu()
    return DecodedBatch(tokens, probs)
