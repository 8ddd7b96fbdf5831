"""GPU parity: the compiled (CUDA graphs) decoder against eager, bf16 boxes against fp32, and the
idle freeze (to CPU and back).

Skipped without CUDA. Self-contained (no conftest fixtures, no supervisely), so that it runs on
a GPU machine with only torch and transformers: ``pytest --noconftest -m gpu tests/unit/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from kosmos2_engine import DecoderStatus, Kosmos2Engine, policy_from_settings
from kosmos2_engine.grounding import GRID, box_to_patch_indices
from kosmos2_engine.prompts import encode_prompt
from kosmos2_engine.runtime.torch.decoder import StaticDecoder
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, two_shapes
from tests.tiny_model.locate import tiny_checkpoint_folder

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
    engine = Kosmos2Engine.load(
        str(tiny_checkpoint_folder()), device="cuda", dtype=torch.float32, compile_decoder=False
    )
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
    checkpoint = str(tiny_checkpoint_folder())
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": "circle. square. triangle"})
    fp32 = Kosmos2Engine.load(checkpoint, device="cuda", dtype=torch.float32).run(images, policy)
    bf16 = Kosmos2Engine.load(checkpoint, device="cuda", dtype=torch.bfloat16).run(images, policy)
    pairs = list(zip(corner_indices(fp32), corner_indices(bf16)))
    assert len(corner_indices(fp32)) == len(corner_indices(bf16)) >= 2 * len(images)
    share = sum(within_one_bin(a, b) for a, b in pairs) / len(pairs)
    assert share >= MIN_SHARE_WITHIN_ONE_BIN


def test_bf16_location_bins_within_one_of_fp32_on_the_real_size_model():
    """Random weights at the real size: after ``<object>``, the most probable upper-left cell
    (argmax over the 1024 location logits) in bf16 against fp32, over 32 random images."""
    from transformers import AutoProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_checkpoint_folder())
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Kosmos2ForConditionalGeneration(Kosmos2Config()).eval()
    prompt = encode_prompt(processor.tokenizer, "<grounding><phrase> the object</phrase><object>")
    first_location = processor.tokenizer.convert_tokens_to_ids("<patch_index_0000>")
    ids = torch.tensor([prompt.ids], device="cuda").expand(32, -1)
    mask = torch.tensor([prompt.image_mask], device="cuda").expand(32, -1)
    pixels = torch.randn(32, 3, 224, 224, device="cuda")
    cells = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        with torch.inference_mode():
            logits = model(
                pixel_values=pixels.to(dtype),
                input_ids=ids,
                image_embeds_position_mask=mask,
                attention_mask=torch.ones_like(ids),
            ).logits[:, -1]
        cells[dtype] = logits[:, first_location : first_location + GRID * GRID].float().argmax(-1).tolist()
    pairs = list(zip(cells[torch.float32], cells[torch.bfloat16]))
    share = sum(within_one_bin(a, b) for a, b in pairs) / len(pairs)
    assert share >= MIN_SHARE_WITHIN_ONE_BIN


def test_idle_freeze_to_cpu_and_back_keeps_the_answers(images):
    """What the SDK's idle freeze does to the engine: to CPU (fp32) after an hour idle, back to
    CUDA on the next request; the compiled graphs are recorded again at wake-up. Warm-up's own
    checks on a real GPU (the canary compiled against eager, bf16 against fp32) keep compiled
    bf16 decoding."""
    engine = Kosmos2Engine.load(str(tiny_checkpoint_folder()), device="cuda")
    policy = policy_from_settings({"max_new_tokens": 24})
    engine.warm_up()
    assert engine.decoder_status == DecoderStatus("compiled") and engine.dtype == torch.bfloat16
    before = engine.run(images, policy)
    engine.to("cpu")
    assert engine.dtype == torch.float32 and engine.run(images[:2], policy) is not None
    engine.to("cuda")
    engine.warm_up()
    assert engine.run(images, policy) == before
