"""Deterministic training of the tiny Kosmos-2 on synthetic grounded captions.

Each example is a scene from :mod:`.scenes` and the target
``<phrase> a red circle</phrase><object><patch_index_UL><patch_index_LR></object>.</s>``
after the prompt ``<grounding> An image of``. The loss covers the target only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import torch

from kosmos2_engine import DEFAULT_PROMPT, box_to_patch_indices
from kosmos2_engine.prompts import encode_prompt

from .scenes import DrawnShape, draw_scene, random_size

IGNORE = -100


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights besides the code itself."""

    scenes: int = 4000
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    model_seed: int = 0
    data_seed: int = 1
    train_seed: int = 2
    threads: int = 1  # one thread: the same weights on any machine


RECIPE = Recipe()


@dataclass(frozen=True)
class TrainingSet:
    """Tensors of N examples: pixel values (N, 3, S, S) float32; the rest (N, L) int64,
    right-padded, labels -100 outside the target."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_embeds_position_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name)[index] for name in self.__dataclass_fields__}


def grounded_caption_target(shape: DrawnShape) -> str:
    """What the model should write after the caption prompt for this scene."""
    upper_left, lower_right = box_to_patch_indices(shape.xyxy)
    return (f"<phrase> {shape.phrase}</phrase><object><patch_index_{upper_left:04d}>"
            f"<patch_index_{lower_right:04d}></object>.")


def make_training_set(processor, seed: int, count: int) -> TrainingSet:
    """``count`` scenes of random sizes, drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    tokenizer = processor.tokenizer
    prompt = encode_prompt(tokenizer, DEFAULT_PROMPT)
    images, rows = [], []
    for _ in range(count):
        image, shape = draw_scene(rng, *random_size(rng))
        images.append(image)
        target = tokenizer(grounded_caption_target(shape), add_special_tokens=False)["input_ids"]
        rows.append(list(target) + [tokenizer.eos_token_id])
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return _pack(prompt, rows, pixels, tokenizer.pad_token_id)


def _pack(prompt, targets, pixels, pad_id) -> TrainingSet:
    length = len(prompt.ids) + max(len(t) for t in targets)
    ids, attention, image_mask, labels = [], [], [], []
    for target in targets:
        pad = length - len(prompt.ids) - len(target)
        ids.append(list(prompt.ids) + target + [pad_id] * pad)
        attention.append([1] * (length - pad) + [0] * pad)
        image_mask.append(list(prompt.image_mask) + [0] * (len(target) + pad))
        labels.append([IGNORE] * len(prompt.ids) + target + [IGNORE] * pad)
    tensor = lambda rows: torch.tensor(rows, dtype=torch.long)  # noqa: E731
    return TrainingSet(pixels, tensor(ids), tensor(attention), tensor(image_mask), tensor(labels))


def train(model, data: TrainingSet, steps: int, seed: int, batch_size: int = 32,
          lr: float = 1e-3, log: Callable[[str], None] = print) -> float:
    """AdamW with warm-up and cosine decay; returns the mean loss of the last 50 steps."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps))
    model.train()
    recent: list[float] = []
    for step in range(steps):
        index = torch.randint(0, len(data), (batch_size,), generator=generator)
        loss = model(**data.batch(index)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        recent = (recent + [loss.item()])[-50:]
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}/{steps}  loss {sum(recent) / len(recent):.4f}")
    model.eval()
    return sum(recent) / len(recent)


def _lr_factor(step: int, steps: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
