"""The engine on the tiny trained Kosmos-2: boxes, parity with transformers, loading errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kosmos2_engine import CAPTION_PROMPT, CheckpointError, GenerationPolicy, Kosmos2Engine
from kosmos2_engine.prompts import encode_prompt
from tests.support.helpers import SCENE_CASES, iou, scene

REPO = Path(__file__).resolve().parents[2]
CAPTION = GenerationPolicy()


@pytest.mark.parametrize("seed,width,height,colour,shape", SCENE_CASES)
def test_caption_names_and_boxes_the_drawn_shape(engine, seed, width, height, colour, shape):
    image, drawn = scene(seed, width, height, colour, shape)
    [generation] = engine.generate_texts([image], CAPTION)
    [phrase] = generation.grounded.phrases
    assert phrase.phrase == drawn.phrase
    assert generation.grounded.text == f"An image of {drawn.phrase} ."
    [box] = phrase.boxes
    assert iou(box.xyxy, drawn.xyxy) >= 0.5
    assert 0.0 < box.score <= 1.0


def test_batched_decoding_gives_the_tokens_of_one_by_one(engine):
    images = [scene(*case)[0] for case in SCENE_CASES]
    batched = engine.generate_texts(images, CAPTION)
    single = [engine.generate_texts([image], CAPTION)[0] for image in images]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_prompts_of_different_lengths_batch_like_one_by_one(engine):
    image = scene(*SCENE_CASES[1])[0]
    embeds = engine.encode_images([image])
    prompts = ["<grounding> An image of", "<grounding> An image of a", "<grounding>"]
    batched = engine.generate(embeds, prompts, CAPTION, image_rows=[0, 0, 0])
    single = [engine.generate(embeds, [p], CAPTION)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_reused_image_embeddings_match_plain_transformers_generate(engine):
    images = [scene(*case)[0] for case in SCENE_CASES[:3]]
    processor, model = engine.processor, engine.backend.model
    for image in images:
        inputs = processor(images=image, text=CAPTION_PROMPT, return_tensors="pt")
        reference = model.generate(**inputs, max_new_tokens=CAPTION.max_new_tokens, do_sample=False)
        expected = reference[0, inputs["input_ids"].shape[1] :].tolist()
        [ours] = engine.generate_texts([image], CAPTION)
        assert list(ours.token_ids) == expected[: len(ours.token_ids)]
        assert len(ours.token_ids) == len(expected) or ours.token_ids[-1] == engine.tokenizer.eos_token_id


@pytest.mark.parametrize(
    "prompt",
    [
        "<grounding> An image of",
        "<grounding><phrase> a red circle</phrase>",
        "Question: what colour is it? Answer:",
        "<grounding>",
    ],
)
def test_prompt_layout_matches_the_processor(engine, prompt):
    image = scene(*SCENE_CASES[0])[0]
    expected = engine.processor(images=[image], text=[prompt])
    encoded = encode_prompt(engine.tokenizer, prompt)
    assert list(encoded.ids) == expected["input_ids"][0]
    assert list(encoded.image_mask) == expected["image_embeds_position_mask"][0]


def test_max_new_tokens_is_honoured(engine):
    image = scene(*SCENE_CASES[0])[0]
    [short] = engine.generate_texts([image], GenerationPolicy(max_new_tokens=3))
    assert len(short.token_ids) == 3 and short.grounded.phrases == ()
    [full] = engine.generate_texts([image], GenerationPolicy(max_new_tokens=40))
    assert full.token_ids[-1] == engine.tokenizer.eos_token_id and full.grounded.phrases


def test_confidence_threshold_drops_boxes_below_it(engine):
    image = scene(*SCENE_CASES[3])[0]
    [kept] = engine.generate_texts([image], CAPTION)
    score = kept.grounded.phrases[0].boxes[0].score
    assert score < 1.0
    [at] = engine.generate_texts([image], GenerationPolicy(confidence_threshold=score - 1e-6))
    [above] = engine.generate_texts([image], GenerationPolicy(confidence_threshold=min(1.0, score + 1e-6)))
    assert at.grounded.phrases and not above.grounded.phrases
    assert above.grounded.text == kept.grounded.text


def test_square_resize_even_when_the_processor_config_would_crop(tiny_checkpoint):
    engine = Kosmos2Engine.load(tiny_checkpoint)
    engine.processor.image_processor.do_center_crop = True  # a plain CLIP config crops the sides
    engine.processor.image_processor.size = {"shortest_edge": engine.image_size}
    image, drawn = scene(7, 320, 80, "blue", "circle")
    assert drawn.xyxy[2] > 0.8 or drawn.xyxy[0] < 0.2, "the shape should sit near an edge a crop cuts"
    [generation] = engine.generate_texts([image], CAPTION)
    assert iou(generation.grounded.phrases[0].boxes[0].xyxy, drawn.xyxy) >= 0.5


def test_engine_moves_between_devices_without_reloading(engine):
    image = scene(*SCENE_CASES[2])[0]
    before = engine.generate_texts([image], CAPTION)
    assert engine.to("cpu") is engine
    assert engine.generate_texts([image], CAPTION) == before


def test_missing_folder_says_what_to_set(tmp_path):
    with pytest.raises(CheckpointError, match="KOSMOS2_CHECKPOINT"):
        Kosmos2Engine.load(str(tmp_path / "no-such-folder"))


def test_incomplete_folder_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="not a complete Kosmos-2 checkpoint"):
        Kosmos2Engine.load(str(tmp_path))


def imported_top_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_only_the_adapter_the_jobs_and_their_io_import_supervisely():
    allowed = {"kosmos2_app", "kosmos2_jobs", "supervisely_io"}
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "src").rglob("*.py")
        if "supervisely" in imported_top_modules(path) and not allowed & set(path.relative_to(REPO / "src").parts)
    ]
    assert offenders == []
    assert "supervisely" in imported_top_modules(REPO / "src" / "kosmos2_app" / "model.py")
