"""GPU parity: the compiled (CUDA graphs) decoder against eager, bf16 boxes against fp32, and the
idle freeze (to CPU and back).

Skipped without CUDA. Self-contained (no conftest fixtures, no supervisely), so that it runs on
a GPU machine with only torch and transformers: ``pytest --noconftest -m gpu tests/unit/test_gpu.py``.
Every test compares two paths on the same weights, so the committed tiny checkpoint serves as it
is, under whichever torch the GPU machine has (no rebuild for another torch).
"""

from __future__ import annotations

import pytest
import torch

from kosmos2_engine import DecoderStatus, Kosmos2Engine, policy_from_settings
from kosmos2_engine.grounding import GRID, box_to_patch_indices
from kosmos2_engine.prompts import encode_prompt
from kosmos2_engine.runtime.torch.decoder import StaticDecoder
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, two_shapes
from tests.tiny_model.locate import committed_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

MIN_SHARE_WITHIN_ONE_BIN = 0.95


def within_one_bin(first: int, second: int) -> bool:
    """Two location-token indices (row * 32 + column) at most one cell apart on each axis."""
    return abs(first // GRID - second // GRID) <= 1 and abs(first % GRID - second % GRID) <= 1


def corner_indices(results) -> list[int]:
    return [index for result in results for box in result.boxes for index in box_to_patch_indices(box.xyxy)]


@pytest.fixture(scope="module")
def images():
    return [scene(*case)[0] for case in SCENE_CASES] + [two_shapes(*case)[0] for case in TWO_SHAPE_CASES]


def test_compiled_decoder_equals_eager_on_cuda(images):
    engine = Kosmos2Engine.load(str(committed_checkpoint()), device="cuda", dtype=torch.float32, compile_decoder=False)
    embeds = engine.encode_images(images)
    prompts = [
        encode_prompt(engine.tokenizer, text)
        for text in [
            "<grounding>An image of",
            "<grounding><phrase> the blue circle</phrase>",
            "<grounding> Question: What colour is the square? Answer:",
        ]
    ]
    prompts = [prompts[i % 3] for i in range(len(images))]
    stops = [engine.tokenizer.eos_token_id]
    eager = StaticDecoder(engine.backend.model).decode(embeds, prompts, 24, stops)
    compiled_decoder = StaticDecoder(engine.backend.model, compile_step=True)
    for _ in range(3):  # first call compiles, later ones replay the recorded graph
        compiled = compiled_decoder.decode(embeds, prompts, 24, stops)
    assert torch.equal(compiled.tokens, eager.tokens)


def test_bf16_boxes_within_one_bin_of_fp32_on_the_tiny_model(images):
    checkpoint = str(committed_checkpoint())
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": "circle. square. triangle"})
    # eager: numerics only (compiling each engine costs about 30 s of the check's time on an H200)
    fp32, bf16 = (
        Kosmos2Engine.load(checkpoint, device="cuda", dtype=dtype, compile_decoder=False).run(images, policy)
        for dtype in (torch.float32, torch.bfloat16)
    )
    pairs = list(zip(corner_indices(fp32), corner_indices(bf16)))
    assert len(corner_indices(fp32)) == len(corner_indices(bf16)) >= 2 * len(images)
    share = sum(within_one_bin(a, b) for a, b in pairs) / len(pairs)
    assert share >= MIN_SHARE_WITHIN_ONE_BIN


MAX_RELATIVE_ERROR = 0.05  # bf16 keeps 8 bits of mantissa (0.4% per rounding) through 48 layers


def test_bf16_location_logits_track_fp32_at_the_real_size():
    """Random weights at the real size (24 vision and 24 text layers), 32 random images: the
    1024 location logits after ``<object>`` in bf16 against fp32, each row centred, have a
    relative error (norm of the difference over the norm of fp32's) under 5%.

    Random weights cannot test box agreement: their location logits are near-tied, so any
    rounding reorders them (87.5% of the argmax cells within one bin on an H200, 2026-12-04).
    Trained weights can: the tiny model's test above, and every half-precision engine's
    warm-up canary (:mod:`kosmos2_engine.canary`)."""
    from transformers import AutoProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(committed_checkpoint())
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Kosmos2ForConditionalGeneration(Kosmos2Config()).eval()
    prompt = encode_prompt(processor.tokenizer, "<grounding><phrase> the object</phrase><object>")
    first_location = processor.tokenizer.convert_tokens_to_ids("<patch_index_0000>")
    ids = torch.tensor([prompt.ids], device="cuda").expand(32, -1)
    mask = torch.tensor([prompt.image_mask], device="cuda").expand(32, -1)
    pixels = torch.randn(32, 3, 224, 224, device="cuda")
    logits = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        with torch.inference_mode():
            out = (
                model(
                    pixel_values=pixels.to(dtype),
                    input_ids=ids,
                    image_embeds_position_mask=mask,
                    attention_mask=torch.ones_like(ids),
                )
                .logits[:, -1, first_location : first_location + GRID * GRID]
                .double()
            )
        logits[dtype] = out - out.mean(dim=-1, keepdim=True)
    error = float((logits[torch.bfloat16] - logits[torch.float32]).norm() / logits[torch.float32].norm())
    print(f"bf16 location logits against fp32: relative error {error:.4f}")
    assert error < MAX_RELATIVE_ERROR


def test_idle_freeze_to_cpu_and_back_keeps_the_answers(images):
    """What the SDK's idle freeze does to the engine: to CPU (fp32) after an hour idle, back to
    CUDA on the next request; the compiled graphs are recorded again at wake-up. Warm-up's own
    checks on a real GPU (the canary compiled against eager, bf16 against fp32) keep compiled
    bf16 decoding."""
    engine = Kosmos2Engine.load(str(committed_checkpoint()), device="cuda")
    policy = policy_from_settings({"max_new_tokens": 24})
    engine.warm_up()
    assert engine.decoder_status == DecoderStatus("compiled") and engine.dtype == torch.bfloat16
    before = engine.run(images, policy)
    engine.to("cpu")
    assert engine.dtype == torch.float32 and engine.run(images[:2], policy) is not None
    engine.to("cuda")
    engine.warm_up()
    assert engine.run(images, policy) == before
