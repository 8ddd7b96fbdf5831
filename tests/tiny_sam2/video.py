"""The tiny SAM 2's video memory: trained here, on clips of the shapes moving, over its image model.

SAM 2's video model (transformers' ``Sam2VideoModel``) is its image model plus a memory: the
memory encoder turns a frame's mask into memory features, memory attention conditions the next
frame's features on them, and object pointers carry each object's identity; the mask decoder then
segments each object from those features with no prompt at all. :func:`train_video` trains the
memory, and the prompt encoder and mask decoder with it (the image encoder stays frozen), on two
losses at once, as SAM 2 itself was trained on images and videos: clips, and the box-prompted
scenes of :mod:`.train`, through a ``Sam2Model`` that shares the video model's modules, so that
the image model keeps segmenting from boxes. A clip is a scene of one shape or two
(``tests.tiny_model.scenes``) whose shapes glide a few pixels a frame; the first frame's true
masks are the prompts (as a served video gives the masks of its key frame), and the clip's loss
(binary cross-entropy and Dice on each mask, binary cross-entropy on the object score) is taken
on the frames after it, through the very ``forward`` that serves propagation, with gradients on.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tests.tiny_model.scenes import draw_scene, draw_two_shapes

from .train import mask_loss

CLIP_FRAMES = 5  # a key frame and the frames it is propagated through
VIDEO_STEPS, VIDEO_LEARNING_RATE, IMAGE_BATCH = 1500, 1e-3, 8
HELD_OUT_SEED, MINIMUM_PROPAGATED_IOU = 998, 0.8
SPEED = 0.06  # a shape moves up to this share of the image's side per frame, on each axis
# The parts the video model adds to the image model (its parameters' name prefixes).
MEMORY_PARTS = (
    "memory_", "mask_downsample", "object_pointer_proj", "temporal_positional_encoding_projection_layer",
    "no_memory_positional_encoding", "no_object_pointer", "occlusion_spatial_embedding_parameter",
)  # fmt: skip


def video_model(image):
    """A ``Sam2VideoModel`` holding the weights of ``image`` (a trained tiny ``Sam2Model``), its
    memory sized to that model (64 memory channels, as transformers' memory attention expects)
    and seeded, untrained. It segments with one mask token, the one the image model trained
    (``multimask_output=False``): SAM 2's multimask output for tracking, and its fallback to the
    other tokens when a mask is unstable, would pick among three it never trained."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    config = image.config
    decoder = config.mask_decoder_config.to_dict() | {"dynamic_multimask_via_stability": False}
    hidden = config.vision_config.fpn_hidden_size
    side = config.vision_config.backbone_config.image_size
    top = list(config.vision_config.backbone_feature_sizes[-1])
    video_config = Sam2VideoConfig(
        vision_config=config.vision_config.to_dict(), prompt_encoder_config=config.prompt_encoder_config.to_dict(),
        mask_decoder_config=decoder, image_size=side,
        memory_attention_hidden_size=hidden, memory_attention_num_layers=2,
        memory_attention_feed_forward_hidden_size=hidden,
        memory_attention_rope_feat_sizes=top, memory_attention_dropout=0.0, memory_attention_rope_dropout=0.0,
        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=2 * hidden,
        multimask_output_in_sam=False,  # one mask per frame, from the mask token the image model trained
    )  # fmt: skip
    torch.manual_seed(0)
    video = Sam2VideoModel(video_config)
    loaded = video.load_state_dict(image.state_dict(), strict=False)
    assert not loaded.unexpected_keys, loaded.unexpected_keys
    assert all(name.startswith(MEMORY_PARTS) for name in loaded.missing_keys), loaded.missing_keys
    return video


def clip(rng: random.Random, frames: int = CLIP_FRAMES) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """``frames`` RGB uint8 (H, W, 3) frames of one shape or two gliding over a grey scene, and
    per frame the mask (bool (H, W)) of each shape as it shows (a shape drawn over another hides
    it). Every shape stays whole inside the frame."""
    from .train import shape_pixels

    width, height = rng.randint(64, 256), rng.randint(64, 256)
    if rng.random() < 0.5:
        image, drawn = draw_scene(rng, width, height)
        shapes = (drawn,)
    else:
        image, shapes = draw_two_shapes(rng, max(width, 96), height)
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    background = pixels[~shape_pixels(pixels)][0]
    sprites = []
    for shape in shapes:
        left, top, right, bottom = shape.pixel_ltrb
        inside = np.zeros(pixels.shape[:2], bool)
        inside[top : bottom + 1, left : right + 1] = True
        mask = shape_pixels(pixels) & inside
        velocity = (rng.uniform(-SPEED, SPEED) * height, rng.uniform(-SPEED, SPEED) * width)
        sprites.append((mask, pixels[mask][0], (top, left, bottom, right), velocity))
    out_frames, out_masks = [], []
    for index in range(frames):
        frame = np.empty_like(pixels)
        frame[:] = background
        masks = []
        for mask, colour, box, velocity in sprites:
            moved = _moved(mask, box, velocity, index, (height, width))
            for earlier in masks:
                earlier &= ~moved
            frame[moved] = colour
            masks.append(moved)
        out_frames.append(frame)
        out_masks.append(masks)
    return out_frames, out_masks


def _moved(mask: np.ndarray, box, velocity, index: int, size) -> np.ndarray:
    """``mask`` moved ``index`` frames along ``velocity`` (rows, columns per frame), stopped
    at the frame's edges."""
    top, left, bottom, right = box
    rows = int(np.clip(round(velocity[0] * index), -top, size[0] - 1 - bottom))
    columns = int(np.clip(round(velocity[1] * index), -left, size[1] - 1 - right))
    return np.roll(mask, (rows, columns), axis=(0, 1))


def _session(video, frames: list[np.ndarray], key_masks: list[np.ndarray]):
    """An inference session over ``frames`` whose objects (ids 1, 2, ...) are given by their
    masks on frame 0."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    from kosmos2_engine.segmentation import sam_pixels

    side = video.config.image_size
    pixels = torch.from_numpy(np.stack([sam_pixels(frame, side) for frame in frames]))
    height, width = frames[0].shape[:2]
    session = Sam2VideoInferenceSession(video=pixels, video_height=height, video_width=width, dtype=torch.float32)
    for obj_id, mask in enumerate(key_masks, 1):
        session.add_mask_inputs(session.obj_id_to_idx(obj_id), 0, _resized(mask, side)[None, None])
    session.obj_with_new_inputs = list(range(1, len(key_masks) + 1))
    return session


def _resized(mask: np.ndarray, side: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.fromarray(mask).resize((side, side), Image.NEAREST))).float()


def _clip_loss(video, forward, frames, masks) -> tuple[torch.Tensor, float]:
    side = video.config.image_size
    session = _session(video, frames, masks[0])
    outputs = [forward(video, session, frame_idx=index) for index in range(len(frames))][1:]
    logits = torch.cat([out.pred_masks for out in outputs])[:, 0]  # (frames x objects, h, w)
    logits = F.interpolate(logits[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    targets = torch.stack([_resized(mask, side) for frame_masks in masks[1:] for mask in frame_masks])
    scores = torch.cat([out.object_score_logits.reshape(-1) for out in outputs])
    present = F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
    loss = mask_loss(logits, targets) + present
    hard = (logits > 0).float()
    iou = ((hard * targets).sum((1, 2)) / ((hard + targets).clamp(max=1).sum((1, 2)) + 1e-6)).mean()
    return loss, float(iou)


def train_video(video, image, steps: int = VIDEO_STEPS):
    """``video`` trained (see the module's docstring), in eval mode as served; ``image`` (the
    ``Sam2Model`` it was made from) shares its modules from now on, so it holds the image
    model's trained weights too."""
    from .train import _batch, box_prompted_loss

    torch.set_num_threads(2)
    for name in ("shared_image_embedding", "vision_encoder", "prompt_encoder", "mask_decoder"):
        setattr(image, name, getattr(video, name))
    image.no_memory_embedding = video.no_memory_embedding
    video.vision_encoder.requires_grad_(False)
    memory = [p for name, p in video.named_parameters() if name.startswith(MEMORY_PARTS)]
    image_parts = [p for name, p in video.named_parameters() if p.requires_grad and not name.startswith(MEMORY_PARTS)]
    rates = [VIDEO_LEARNING_RATE, VIDEO_LEARNING_RATE / 3]
    optimiser = torch.optim.AdamW(
        [{"params": memory, "lr": rates[0]}, {"params": image_parts, "lr": rates[1]}], weight_decay=0.01
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=rates, total_steps=steps, pct_start=0.1)
    forward = type(video).forward.__wrapped__  # the served forward, without its inference mode
    rng = random.Random(1)
    video.eval()  # as served: the memory of a prompted frame is its binarised mask
    for step in range(steps):
        frames, masks = clip(rng)
        clip_loss, clip_iou = _clip_loss(video, forward, frames, masks)
        image_loss, iou = box_prompted_loss(image, *_batch(rng, IMAGE_BATCH))
        optimiser.zero_grad()
        (clip_loss + image_loss).backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            print(f"video step {step}: clip loss {clip_loss.item():.3f}, IoU {clip_iou:.3f}; image IoU "
                  f"{iou.mean().item():.3f}", flush=True)  # fmt: skip
    video.requires_grad_(True)
    return video


def held_out_propagated_iou(video, count: int = 48) -> float:
    """Mean IoU of the masks propagated through ``count`` clips drawn from a seed training never
    used (every frame after the key frame, every shape), through the served forward."""
    rng, ious = random.Random(HELD_OUT_SEED), []
    side = video.config.image_size
    for _ in range(count):
        frames, masks = clip(rng)
        session = _session(video, frames, masks[0])
        for index in range(len(frames)):
            out = video(session, frame_idx=index)  # frame 0 first: its masks are the prompts
            if index == 0:
                continue
            logits = F.interpolate(out.pred_masks, size=(side, side), mode="bilinear", align_corners=False)[:, 0]
            for hard, mask in zip(logits > 0, masks[index]):
                target = _resized(mask, side) > 0
                ious.append(float((hard & target).sum() / ((hard | target).sum() + 1e-6)))
    return float(np.mean(ious))
