"""The tiny Kosmos-2: a locally built tokenizer, the real ``Kosmos2Processor`` (11 tag tokens
and all 1024 location tokens) and the real ``Kosmos2ForConditionalGeneration``, made small.

Image side 64 px with 8 px patches; 64 latent image tokens, as in the real model, so the
processor's defaults hold. Location-token embeddings start as smooth row/column codes, so that
neighbouring grid cells start out similar; training then refines them. The image path is
initialised so that image embeddings differ between images from the start (see below).
"""

from __future__ import annotations

import math
import string

import torch
from transformers import (
    CLIPImageProcessorPil,
    Kosmos2Config,
    Kosmos2ForConditionalGeneration,
    Kosmos2Processor,
    XLMRobertaTokenizer,
)

from .scenes import COLOURS, SHAPES

IMAGE_SIDE = 64
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WORDS = (
    "a an the of image in is it this that what which where colour color shape object "
    "question answer describe detail picture and on with left right top bottom there"
).split()


def build_processor() -> Kosmos2Processor:
    """Tokenizer from a hand-made Unigram vocabulary (no sentencepiece file), then the real
    processor on top; square resize, no centre crop, left padding."""
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = sorted(set(WORDS) | set(COLOURS) | set(SHAPES))
    pieces = [("\u2581" + w, -2.0 - 0.01 * i) for i, w in enumerate(words)]
    pieces += [("\u2581" + w.capitalize(), -3.0 - 0.01 * i) for i, w in enumerate(words)]
    chars = [(c, -10.0) for c in string.ascii_letters + string.digits + string.punctuation]
    tokenizer = XLMRobertaTokenizer(vocab=specials + pieces + chars + [("\u2581", -8.0)], model_max_length=2048)
    tokenizer.padding_side = "left"
    image_processor = CLIPImageProcessorPil(
        size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
        do_center_crop=False,
        crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
        resample=3,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return Kosmos2Processor(image_processor, tokenizer)


def build_model(processor: Kosmos2Processor, seed: int) -> Kosmos2ForConditionalGeneration:
    """A randomly initialised tiny model whose vocabulary matches ``processor``."""
    torch.manual_seed(seed)
    config = Kosmos2Config(
        text_config=dict(
            vocab_size=len(processor.tokenizer),
            embed_dim=128,
            layers=3,
            attention_heads=4,
            ffn_dim=256,
            max_position_embeddings=256,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            layerdrop=0.0,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIDE,
            patch_size=8,
            dropout=0.0,
            attention_dropout=0.0,
        ),
        latent_query_num=64,
    )
    model = Kosmos2ForConditionalGeneration(config)
    _init_image_path(model)
    _init_location_embeddings(model, processor)
    return model


def _init_image_path(model) -> None:
    """Fan-in scaled resampler weights and strong ViT position embeddings.

    With the default 0.02 init the resampler averages image features into embeddings that
    hardly differ between images (std 1e-4 across images) and patches carry almost no position,
    so a tiny model learns to ignore the image. Measured: across-image spread 0.09 -> 0.3 of the
    embedding size with this init.
    """
    projection = model.image_to_text_projection
    attention = projection.x_attn
    with torch.no_grad():
        for layer in (projection.dense, attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj):
            torch.nn.init.normal_(layer.weight, std=layer.weight.shape[1] ** -0.5)
            torch.nn.init.zeros_(layer.bias)
        torch.nn.init.normal_(projection.latent_query, std=0.02)
        torch.nn.init.normal_(model.vision_model.model.embeddings.position_embedding.weight, std=0.5)


def _init_location_embeddings(model, processor) -> None:
    """Row and column sinusoid codes in the first dims of each ``<patch_index_k>`` embedding."""
    first = processor.tokenizer.convert_tokens_to_ids("<patch_index_0000>")
    weight = model.get_input_embeddings().weight
    dim = weight.shape[1] // 4  # a quarter of the width for rows, a quarter for columns
    freqs = torch.tensor([math.pi * (f + 1) / 32 for f in range(dim // 2)])
    cells = torch.arange(1024)
    with torch.no_grad():
        for offset, coord in ((0, cells // 32), (dim, cells % 32)):
            angles = coord[:, None].float() * freqs[None, :]
            code = torch.cat([angles.sin(), angles.cos()], dim=1) * 0.1
            weight[first : first + 1024, offset : offset + dim] = code
