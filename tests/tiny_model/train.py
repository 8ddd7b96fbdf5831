"""Deterministic training of the tiny Kosmos-2 on synthetic scenes, every task at once.

Each scene (one or two shapes) gives one example per task (see :mod:`.examples`): the
prompt after the image tokens, then the target and end-of-text. The loss covers the target only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kosmos2_engine.prompts import encode_prompt

from .examples import scene_examples
from .scenes import draw_scene, draw_two_shapes, random_size

IGNORE = -100


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights besides the code itself."""

    scenes: int = 20000
    two_shape_share: float = 0.6
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    model_seed: int = 0
    data_seed: int = 1
    train_seed: int = 2
    threads: int = 1  # one thread: the same weights on any machine


RECIPE = Recipe()


@dataclass(frozen=True)
class TrainingSet:
    """N examples over S scenes: pixel values (S, 3, side, side) float32; ``scene_index`` (N,)
    int64; the rest (N, L) int64, right-padded, labels -100 outside the target."""

    pixel_values: torch.Tensor
    scene_index: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_embeds_position_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The examples at ``index``, cut to the longest of them."""
        length = int(self.attention_mask[index].sum(dim=1).max())
        names = ("input_ids", "attention_mask", "image_embeds_position_mask", "labels")
        return {
            "pixel_values": self.pixel_values[self.scene_index[index]],
            **{name: getattr(self, name)[index, :length] for name in names},
        }


def make_training_set(processor, seed: int, count: int, two_shape_share: float) -> TrainingSet:
    """``count`` scenes of random sizes drawn from ``random.Random(seed)``, every task on each."""
    rng = random.Random(seed)
    images, rows = [], []
    for scene in range(count):
        size = random_size(rng)
        if rng.random() < two_shape_share:
            image, shapes = draw_two_shapes(rng, *size)
        else:
            image, shape = draw_scene(rng, *size)
            shapes = (shape,)
        images.append(image)
        rows += [(scene, example) for example in scene_examples(rng, shapes)]
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return _pack(processor.tokenizer, rows, pixels)


def _pack(tokenizer, rows, pixels) -> TrainingSet:
    encoded = []
    for _, example in rows:
        prompt = encode_prompt(tokenizer, example.prompt)
        target = tokenizer(example.target, add_special_tokens=False)["input_ids"]
        encoded.append((prompt, list(target) + [tokenizer.eos_token_id]))
    length = max(len(prompt.ids) + len(target) for prompt, target in encoded)
    ids, attention, image_mask, labels = [], [], [], []
    for prompt, target in encoded:
        used = len(prompt.ids) + len(target)
        pad = length - used
        ids.append(list(prompt.ids) + target + [tokenizer.pad_token_id] * pad)
        attention.append([1] * used + [0] * pad)
        image_mask.append(list(prompt.image_mask) + [0] * (len(target) + pad))
        labels.append([IGNORE] * len(prompt.ids) + target + [IGNORE] * pad)
    tensor = lambda rows: torch.tensor(rows, dtype=torch.long)
    scenes = tensor([scene for scene, _ in rows])
    return TrainingSet(pixels, scenes, tensor(ids), tensor(attention), tensor(image_mask), tensor(labels))


def train(
    model,
    data: TrainingSet,
    steps: int,
    seed: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    log: Callable[[str], None] = print,
) -> float:
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
