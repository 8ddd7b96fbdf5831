"""A tiny SAM 2 that segments the tiny Kosmos-2's shapes from a box, and follows them through
videos: trained here, committed.

    PYTHONPATH=src:. python -m tests.tiny_sam2.train [FOLDER]     (make tiny-sam2)

SAM 2's architecture (transformers' ``Sam2Model``: a Hiera image encoder with its feature
pyramid, the prompt encoder and the two-way mask decoder) at 128 x 128 pixels and about 0.9 M
parameters (1.6 M with the video memory), trained from scratch on scenes of one shape or two
(``tests.tiny_model.scenes``) with one shape's pixel box, each side moved by up to a tenth of
its size, as the prompt: binary cross-entropy and Dice on the mask, the squared error of its
predicted quality against the mask's true IoU. Then its video memory is trained with it
(:mod:`.video`), and the whole is saved as SAM 2's video model (``Sam2VideoModel``, whose
checkpoint ``Sam2Model`` loads too, as it loads the released ``facebook/sam2.1-*``). Seeded, on
two threads: about 25 minutes on a CPU. It is saved only when its masks reach a mean IoU of 0.9
on scenes it never saw (with exact boxes), and the masks it propagates one of 0.8 on clips it
never saw.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tests.tiny_model.scenes import draw_scene, draw_two_shapes, random_size

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "checkpoint"
SIDE = 128
# Feature width: SAM 2's video memory (transformers' ``Sam2VideoModel``) has 64 channels and
# splits each object pointer into memory-sized pieces, so the features must be wider than 64.
HIDDEN = 128
STEPS, BATCH, LEARNING_RATE = 2500, 16, 1e-3
HELD_OUT_SEED, MINIMUM_IOU = 999, 0.9
JITTER = 0.1  # prompts' sides move by up to this share of the box


def build_model():
    """A seeded, untrained tiny ``Sam2Model`` for ``SIDE`` x ``SIDE`` images."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    backbone = Sam2HieraDetConfig(
        hidden_size=16, image_size=SIDE, patch_stride=4, patch_kernel_size=7, patch_padding=3,
        blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 2, 4, 8], window_positional_embedding_background_size=[2, 2],
    )  # fmt: skip
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=HIDDEN,
    )  # fmt: skip
    prompts = Sam2PromptEncoderConfig(image_size=SIDE, patch_size=16, mask_input_channels=8, hidden_size=HIDDEN)
    decoder = Sam2MaskDecoderConfig(hidden_size=HIDDEN, mlp_dim=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                    iou_head_hidden_dim=32)  # fmt: skip
    torch.manual_seed(0)
    return Sam2Model(Sam2Config(vision_config=vision, prompt_encoder_config=prompts, mask_decoder_config=decoder))


def example(rng: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene (RGB uint8 (H, W, 3)), the mask of one of its shapes (bool (H, W)) and that
    shape's box (pixel xyxy, exclusive right and bottom). Half the scenes hold two shapes side
    by side, so that the mask follows the box, not whatever is not background."""
    width, height = random_size(rng)
    if rng.random() < 0.5:
        image, drawn = draw_scene(rng, max(width, 48), height)
    else:
        image, pair = draw_two_shapes(rng, max(width, 96), height)
        drawn = pair[rng.randrange(2)]
    left, top, right, bottom = drawn.pixel_ltrb
    box = np.array([left, top, right + 1, bottom + 1], dtype=np.float32)
    pixels = np.asarray(image)
    inside = np.zeros(pixels.shape[:2], bool)
    inside[top : bottom + 1, left : right + 1] = True  # the shapes of a pair lie in parts of their own
    return pixels, shape_pixels(pixels) & inside, box


def shape_pixels(image: np.ndarray) -> np.ndarray:
    """Bool (H, W): the shape's pixels of a scene, the ones that are not grey (the background is
    grey, every shape's colour is not, and shapes are drawn without anti-aliasing)."""
    return ~((image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2]))


def jittered(box: np.ndarray, rng: random.Random, width: int, height: int, share: float = JITTER) -> np.ndarray:
    """``box`` with each side moved by up to ``share`` of the box's size, inside the image:
    Kosmos-2's boxes sit on a 32 x 32 grid and miss by a cell or more, so prompts must not be exact."""
    left, top, right, bottom = box
    dx, dy = (right - left) * share, (bottom - top) * share
    moved = [left + rng.uniform(-dx, dx), top + rng.uniform(-dy, dy), right + rng.uniform(-dx, dx),
             bottom + rng.uniform(-dy, dy)]  # fmt: skip
    return np.clip(np.array(moved, np.float32), 0, [width, height, width, height])


def _batch(rng: random.Random, size: int, jitter: bool = True):
    from kosmos2_engine.segmentation import sam_pixels

    images, masks, boxes = zip(*(example(rng) for _ in range(size)))
    if jitter:
        boxes = tuple(jittered(box, rng, image.shape[1], image.shape[0]) for box, image in zip(boxes, images))
    pixels = torch.stack([torch.from_numpy(sam_pixels(image, SIDE)) for image in images])
    targets = torch.stack(
        [torch.from_numpy(np.asarray(Image.fromarray(m).resize((SIDE, SIDE), Image.NEAREST))).float() for m in masks]
    )
    scaled = torch.stack(
        [torch.from_numpy(box * np.array([SIDE / i.shape[1], SIDE / i.shape[0]] * 2, np.float32)) for box, i in
         zip(boxes, images)]
    )  # fmt: skip
    return pixels, targets, scaled


def _masks(model, pixels, boxes):
    out = model(pixel_values=pixels, input_boxes=boxes[:, None, :], multimask_output=False)
    logits = F.interpolate(out.pred_masks[:, 0], size=(SIDE, SIDE), mode="bilinear", align_corners=False)[:, 0]
    return logits, out.iou_scores[:, 0, 0]


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy and Dice of mask ``logits`` (N, H, W) against 0/1 ``targets``."""
    probabilities = torch.sigmoid(logits)
    overlap = (probabilities * targets).sum((1, 2))
    dice = 1 - (2 * overlap + 1) / (probabilities.sum((1, 2)) + targets.sum((1, 2)) + 1)
    return F.binary_cross_entropy_with_logits(logits, targets) + dice.mean()


def box_prompted_loss(model, pixels, targets, boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of ``model``'s masks for a batch of :func:`_batch` (:func:`mask_loss` plus the
    squared error of the predicted quality against the true IoU), and each mask's IoU."""
    logits, quality = _masks(model, pixels, boxes)
    iou = _iou((logits > 0).float(), targets).detach()
    return mask_loss(logits, targets) + F.mse_loss(quality, iou), iou


def _iou(hard: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (hard * target).sum((1, 2)) / ((hard + target).clamp(max=1).sum((1, 2)) + 1e-6)


def train(steps: int = STEPS):
    """The trained model (train mode off)."""
    torch.set_num_threads(2)
    model = build_model()
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.1)
    rng = random.Random(0)
    model.train()
    for step in range(steps):
        loss, iou = box_prompted_loss(model, *_batch(rng, BATCH))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 250 == 0:
            print(f"step {step}: loss {loss.item():.3f}, IoU {iou.mean().item():.3f}", flush=True)
    return model.eval()


def held_out_iou(model, count: int = 128) -> float:
    """Mean IoU of the masks of ``count`` scenes drawn from a seed training never used."""
    rng, ious = random.Random(HELD_OUT_SEED), []
    with torch.no_grad():
        for _ in range(count // BATCH):
            pixels, targets, boxes = _batch(rng, BATCH, jitter=False)
            ious += _iou((_masks(model, pixels, boxes)[0] > 0).float(), targets).tolist()
    return float(np.mean(ious))


def main(folder: Path = CHECKPOINT) -> None:
    from .video import MINIMUM_PROPAGATED_IOU, held_out_propagated_iou, train_video, video_model

    model = train()
    video = train_video(video_model(model), model)  # model shares the video model's modules from here
    iou = held_out_iou(model)
    print(f"held-out mean IoU {iou:.3f}")
    if iou < MINIMUM_IOU:
        raise SystemExit(f"not saved: a mean IoU of {iou:.3f} on held-out scenes is under {MINIMUM_IOU}")
    propagated = held_out_propagated_iou(video)
    print(f"held-out propagated mean IoU {propagated:.3f}")
    if propagated < MINIMUM_PROPAGATED_IOU:
        raise SystemExit(f"not saved: propagated masks' mean IoU {propagated:.3f} is under {MINIMUM_PROPAGATED_IOU}")
    video.save_pretrained(folder)
    print(folder)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKPOINT)
