"""Kosmos-2 inference: encode images once, then decode any number of prompts against them.

The expensive part (the CLIP vision tower and the resampler) runs once per image in
:meth:`Kosmos2Engine.encode_images`; :meth:`Kosmos2Engine.generate` then decodes prompts
against those embeddings, batched with left padding, greedily. Knows nothing of Supervisely.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .checkpoint import default_dtype, load_checkpoint
from .grounding import GroundedText, drop_unconfident_boxes, parse_grounded_pieces
from .policy import BOX_TASKS, TEXT_TASKS, GenerationPolicy, SettingsError
from .prompts import encode_prompt, left_pad
from .ranking import rank_boxes
from .tasks import ANSWER_TASKS, PromptJob, TaskResult, assemble, plan_jobs

logger = logging.getLogger(__name__)

ImageInput = Union[np.ndarray, Image.Image]


@dataclass(frozen=True)
class Generation:
    """One decoded prompt.

    Attributes:
        grounded: the prompt's text and the continuation, parsed.
        answer: the continuation alone, parsed (what the model wrote).
        token_ids: the generated ids, up to and including end-of-text if it was reached.
    """

    grounded: GroundedText
    answer: GroundedText
    token_ids: tuple[int, ...]


class _ChosenTokenProbability(LogitsProcessor):
    """Records, per step, the probability of the token greedy decoding picks: the largest
    softmax value over the full vocabulary. Kept on the device: no host sync per step."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(scores.float().softmax(dim=-1).amax(dim=-1))
        return scores


class Kosmos2Engine:
    """A loaded Kosmos-2 model and processor on one device. Thread-safe: a lock serialises work.

    Args:
        model: a ``Kosmos2ForConditionalGeneration`` in eval mode.
        processor: its ``Kosmos2Processor``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        max_batch_size: most prompts decoded in one batch.
    """

    def __init__(self, model, processor, device: str = "cpu", max_batch_size: int = 16):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_batch_size = max_batch_size
        self.device = device
        self._lock = threading.RLock()
        self.model.to(device)

    @classmethod
    def load(cls, checkpoint: str, device: str = "cpu", dtype: torch.dtype | None = None,
             max_batch_size: int = 16) -> "Kosmos2Engine":
        """Load from a folder or hub id (see :mod:`.checkpoint`), in ``dtype`` (default: bf16 or
        fp16 on CUDA, fp32 on CPU)."""
        _check_device(device)
        model, processor = load_checkpoint(checkpoint, dtype or default_dtype(device))
        return cls(model, processor, device, max_batch_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    def to(self, device: str, dtype: torch.dtype | None = None) -> "Kosmos2Engine":
        """Move the model to ``device`` (and ``dtype``, default for that device) in place."""
        _check_device(device)
        with self._lock:
            self.model.to(device=device, dtype=dtype or default_dtype(device))
            self.device = device
        return self

    @torch.inference_mode()
    def encode_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Image embeddings, (B, 64, text hidden size), in the model's dtype on its device.

        ``images`` are RGB ``uint8`` arrays (H, W, 3) (grey and RGBA are converted) or PIL
        images of any size; each is squashed to a square (no crop), as Kosmos-2 was trained.
        """
        side = self.image_size
        pixels = self.processor.image_processor(
            [_to_rgb(image) for image in images], return_tensors="pt",
            size={"height": side, "width": side}, do_center_crop=False,
        )["pixel_values"]
        with self._lock:
            pixels = pixels.to(self.device, self.dtype)
            hidden = self.model.vision_model(pixel_values=pixels)[0]
            hidden = self.model.vision_model.model.post_layernorm(hidden)
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
            embeds, _ = self.model.image_to_text_projection(hidden)
        return embeds

    @torch.inference_mode()
    def generate(self, image_embeds: torch.Tensor, prompts: Sequence[str],
                 policy: GenerationPolicy, image_rows: Sequence[int] | None = None) -> list[Generation]:
        """Decode ``prompts[i]`` against image ``image_rows[i]`` of ``image_embeds``.

        ``image_rows`` defaults to ``0..len(prompts)-1``. Prompts are decoded greedily, for at
        most ``policy.max_new_tokens`` tokens, in batches of at most ``max_batch_size`` prompts
        of **equal token length**; a batch stops when every row has ended. Boxes below
        ``policy.confidence_threshold`` are dropped. Results keep the order of ``prompts``.

        Why equal lengths: transformers' Kosmos-2 numbers a generated token's position by the
        cache length, pads included, so a left-padded row's new tokens get positions shifted by
        its padding and its output changes (seen on the tiny model). Bucketing avoids padding.
        """
        rows = list(range(len(prompts))) if image_rows is None else list(image_rows)
        if len(rows) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(rows)} image rows")
        encoded = [self._encode_prompt(prompt, policy) for prompt in prompts]
        return self._generate_encoded(image_embeds, encoded, rows, policy)

    def _generate_encoded(self, image_embeds, encoded, rows, policy) -> list[Generation]:
        """:meth:`generate` for prompts already encoded (and checked) by :meth:`_encode_prompt`."""
        results: list[Generation | None] = [None] * len(encoded)
        for bucket in _equal_length_batches(encoded, self.max_batch_size):
            generations = self._generate_batch(image_embeds, [encoded[i] for i in bucket],
                                               [rows[i] for i in bucket], policy)
            for index, generation in zip(bucket, generations):
                results[index] = generation
        return results

    def run(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> list[TaskResult]:
        """Run ``policy``'s task on every image: one vision pass per image, then every prompt
        of the task (one per phrase, per region …) decoded in batches against it.

        Regions and prompt lengths are checked before any model work.
        """
        jobs = plan_jobs(policy, [_size(image) for image in images])
        encoded = [self._encode_prompt(job.prompt, policy) for job in jobs]
        views = []
        for start in range(0, len(images), self.max_batch_size):
            stop = start + self.max_batch_size
            chunk = [i for i, job in enumerate(jobs) if start <= job.image < stop]
            embeds = self.encode_images(images[start:stop])
            views += self._decode_views(embeds, [jobs[i] for i in chunk], [encoded[i] for i in chunk],
                                        start, policy)
        return assemble(policy, jobs, views, len(images))

    def caption(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> list[Generation]:
        """The :class:`Generation` of a one-prompt-per-image task (caption, detailed caption,
        vqa, custom) for every image: one vision pass per image, batched decoding."""
        if policy.task not in TEXT_TASKS:
            raise ValueError(f"caption() runs one-prompt tasks {TEXT_TASKS}, not '{policy.task}'")
        jobs = plan_jobs(policy, [_size(image) for image in images])
        results: list[Generation] = []
        for start in range(0, len(images), self.max_batch_size):
            embeds = self.encode_images(images[start:start + self.max_batch_size])
            chunk = jobs[start:start + self.max_batch_size]
            results += self.generate(embeds, [job.prompt for job in chunk], policy)
        return results

    def warm_up(self) -> None:
        """Run one short caption so that the first request pays no start-up cost."""
        blank = np.full((self.image_size, self.image_size, 3), 127, dtype=np.uint8)
        self.caption([blank], GenerationPolicy(max_new_tokens=2))

    def _decode_views(self, embeds, jobs: Sequence[PromptJob], encoded, first_image: int,
                      policy: GenerationPolicy) -> list[GroundedText]:
        """Grounded text of each job, ``encoded`` its prompt (see :func:`.tasks.assemble` for
        which view)."""
        rows = [job.image - first_image for job in jobs]
        if policy.task == "referring_expression" and policy.top_k > 1:
            with self._lock:
                return [rank_boxes(self.model, self.tokenizer, embeds[row:row + 1], job.prompt,
                                   job.name, policy) for job, row in zip(jobs, rows)]
        generations = self._generate_encoded(embeds, encoded, rows, policy)
        return [g.answer if policy.task in ANSWER_TASKS else g.grounded for g in generations]

    def _encode_prompt(self, prompt: str, policy: GenerationPolicy):
        encoded = encode_prompt(self.tokenizer, prompt)
        limit = int(self.model.config.text_config.max_position_embeddings)
        if len(encoded.ids) + policy.max_new_tokens > limit:
            raise SettingsError(
                "max_new_tokens",
                f"the prompt takes {len(encoded.ids)} tokens (image included) and the model's "
                f"context is {limit}; max_new_tokens must be at most {limit - len(encoded.ids)}",
            )
        return encoded

    def _generate_batch(self, image_embeds, encoded, rows, policy) -> list[Generation]:
        batch = left_pad(encoded, self.tokenizer.pad_token_id)
        recorder = _ChosenTokenProbability()
        config = self._generation_config(policy)
        with self._lock:
            sequences = self.model.generate(
                input_ids=batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                image_embeds_position_mask=batch.image_embeds_position_mask.to(self.device),
                image_embeds=image_embeds[torch.tensor(rows, device=image_embeds.device)],
                generation_config=config,
                logits_processor=LogitsProcessorList([recorder]),
            )
        new_ids = sequences[:, batch.input_ids.shape[1]:].cpu().tolist()
        probs = torch.stack(recorder.steps, dim=1).cpu().tolist()
        return [self._to_generation(p, _until_stop(ids, config.eos_token_id), pr, policy)
                for p, ids, pr in zip(encoded, new_ids, probs)]

    def _generation_config(self, policy: GenerationPolicy) -> GenerationConfig:
        """Greedy. Grounding tasks also stop at ``</object>``: the box is the answer, and the
        model would otherwise go on into a caption."""
        tok = self.tokenizer
        stops = [tok.eos_token_id]
        if policy.task in BOX_TASKS:
            stops.append(tok.convert_tokens_to_ids("</object>"))
        return GenerationConfig(
            max_new_tokens=policy.max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
            pad_token_id=tok.pad_token_id, eos_token_id=stops, bos_token_id=tok.bos_token_id,
        )

    def _to_generation(self, prompt, new_ids, probs, policy) -> Generation:
        """``new_ids`` end at the first stop token (or at the length limit)."""
        prompt_ids = list(prompt.ids[prompt.text_start:])
        prompt_pieces = self.tokenizer.convert_ids_to_tokens(prompt_ids)
        new_pieces = self.tokenizer.convert_ids_to_tokens(new_ids)
        new_probs = probs[: len(new_ids)]
        grounded = parse_grounded_pieces(prompt_pieces + new_pieces, [1.0] * len(prompt_ids) + new_probs)
        answer = parse_grounded_pieces(new_pieces, new_probs)
        threshold = policy.confidence_threshold
        return Generation(drop_unconfident_boxes(grounded, threshold),
                          drop_unconfident_boxes(answer, threshold), tuple(new_ids))


def _equal_length_batches(encoded, max_batch_size: int) -> list[list[int]]:
    """Indices of ``encoded`` grouped by token length, each group cut into batches."""
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(encoded):
        by_length.setdefault(len(prompt.ids), []).append(index)
    return [group[start:start + max_batch_size] for group in by_length.values()
            for start in range(0, len(group), max_batch_size)]


def _until_stop(ids: list[int], stops: list[int]) -> list[int]:
    """``ids`` up to and including the first stop token (the rest is padding)."""
    for i, token in enumerate(ids):
        if token in stops:
            return ids[: i + 1]
    return ids


def _size(image: ImageInput) -> tuple[int, int]:
    """(width, height) of an (H, W, C) array or a PIL image."""
    return (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size


def _to_rgb(image: ImageInput) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"Device '{device}' was asked for but CUDA is not available; use 'cpu'.")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"Unknown device '{device}': use 'cpu', 'cuda' or 'cuda:N'.")
