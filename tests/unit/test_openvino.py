"""The OpenVINO runtime on the tiny trained checkpoint: export, cache reuse and invalidation,
fp32 IR token-identical to the torch engine on every task, int8 within one location bin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from kosmos2_engine import Kosmos2Engine, policy_from_settings
from kosmos2_engine.grounding import GRID
from kosmos2_engine.prompts import encode_prompt
from kosmos2_engine.runtime.openvino.backend import load_openvino_engine
from kosmos2_engine.runtime.openvino.export import cached_ir, export_openvino, ir_folder
from kosmos2_engine.runtime.torch.decoder import StaticDecoder
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, two_shapes

EVERY_TASK = [
    {},
    {"task": "detailed_caption"},
    {"task": "phrase_grounding", "phrases": "circle. square. triangle"},
    {"task": "referring_expression", "expression": "the red circle"},
    {"task": "referring_expression", "expression": "the blue square", "top_k": 3},
    {"task": "vqa", "question": "What colour is the circle?"},
    {"task": "region_description", "regions": [[0, 0, 30, 30], [10, 5, 60, 40]]},
    {"task": "custom", "prompt": "<grounding> An image of"},
]


@pytest.fixture(scope="module")
def checkpoint_copy(openvino_checkpoint):
    """The tiny checkpoint with its int8 and fp32 IR beside it (exported once per session)."""
    return openvino_checkpoint


@pytest.fixture(scope="module")
def images():
    return [scene(*case)[0] for case in SCENE_CASES] + [two_shapes(*case)[0] for case in TWO_SHAPE_CASES]


@pytest.fixture(scope="module")
def torch_engine(checkpoint_copy):
    return Kosmos2Engine.load(str(checkpoint_copy))


@pytest.fixture(scope="module")
def ov_fp32(checkpoint_copy):
    return load_openvino_engine(str(checkpoint_copy), "fp32")


@pytest.fixture(scope="module")
def ov_int8(checkpoint_copy):
    return load_openvino_engine(str(checkpoint_copy), "int8")


def test_the_fp32_ir_decodes_the_torch_decoders_tokens(torch_engine, ov_fp32, images):
    prompts = [
        encode_prompt(torch_engine.tokenizer, text)
        for text in [
            "<grounding>An image of",
            "<grounding><phrase> the blue circle</phrase>",
            "<grounding> Question: What colour is the square? Answer:",
            "<grounding> Describe this image in detail:",
        ]
    ]
    prompts = [prompts[i % len(prompts)] for i in range(len(images))]  # mixed lengths: left padding
    stops = [torch_engine.tokenizer.eos_token_id]
    expected = StaticDecoder(torch_engine.backend.model).decode(torch_engine.encode_images(images), prompts, 24, stops)
    got = ov_fp32.backend.decoder.decode(ov_fp32.encode_images(images), prompts, 24, stops)
    width = expected.tokens.shape[1]  # the torch loop checks stops every 8 steps, ours every step
    assert got.tokens.tolist() == expected.tokens[:, : got.tokens.shape[1]].tolist() and got.tokens.shape[1] <= width
    assert torch.allclose(torch.from_numpy(got.probs), expected.probs[:, : got.tokens.shape[1]], atol=1e-4)


def test_prompts_sharing_an_image_run_its_prefix_once_and_decode_the_same(torch_engine, ov_fp32, images, monkeypatch):
    texts = [
        "<grounding><phrase> the circle</phrase>",
        "<grounding><phrase> a square</phrase>",
        "<grounding> Question: What colour is the triangle? Answer:",
    ]
    prompts = [encode_prompt(torch_engine.tokenizer, text) for text in texts] * 3
    rows = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    stops = [torch_engine.tokenizer.eos_token_id]
    expected = StaticDecoder(torch_engine.backend.model).decode(
        torch_engine.encode_images(images[:3]), prompts, 16, stops, image_rows=rows
    )
    prefix_runs = []
    shared = ov_fp32.backend.decoder._prefill_sharing_prefixes
    monkeypatch.setattr(
        ov_fp32.backend.decoder, "_prefill_sharing_prefixes", lambda *args: prefix_runs.append(args[2]) or shared(*args)
    )
    got = ov_fp32.backend.decoder.decode(ov_fp32.encode_images(images[:3]), prompts, 16, stops, image_rows=rows)
    assert prefix_runs == [rows]
    assert got.tokens.tolist() == expected.tokens[:, : got.tokens.shape[1]].tolist()
    assert torch.allclose(torch.from_numpy(got.probs), expected.probs[:, : got.tokens.shape[1]], atol=1e-4)


@pytest.mark.parametrize("settings", EVERY_TASK, ids=lambda s: s.get("task", "caption") + str(s.get("top_k", "")))
def test_the_fp32_ir_gives_the_torch_engines_results_on_every_task(torch_engine, ov_fp32, images, settings):
    policy = policy_from_settings(settings)
    for expected, got in zip(torch_engine.run(images, policy), ov_fp32.run(images, policy)):
        assert (got.task, got.text, got.descriptions) == (expected.task, expected.text, expected.descriptions)
        assert [(b.name, b.xyxy) for b in got.boxes] == [(b.name, b.xyxy) for b in expected.boxes]
        assert [b.score for b in got.boxes] == pytest.approx([b.score for b in expected.boxes], abs=1e-4)


@pytest.mark.parametrize("settings", EVERY_TASK[:3] + EVERY_TASK[5:6], ids=lambda s: s.get("task", "caption"))
def test_the_int8_ir_gives_the_same_phrases_and_boxes_within_one_bin(torch_engine, ov_int8, images, settings):
    policy = policy_from_settings(settings)
    for expected, got in zip(torch_engine.run(images, policy), ov_int8.run(images, policy)):
        assert got.text == expected.text and [b.name for b in got.boxes] == [b.name for b in expected.boxes]
        for box, reference in zip(got.boxes, expected.boxes):
            assert max(abs(a - b) for a, b in zip(box.xyxy, reference.xyxy)) <= 1 / GRID + 1e-9


def test_an_export_is_reused_and_a_changed_checkpoint_is_noticed(openvino_checkpoint, tmp_path):
    folder = tmp_path / "tiny"  # a copy of the run's export: the IR is judged by content, not by place
    shutil.copytree(openvino_checkpoint, folder, ignore=shutil.ignore_patterns("openvino-fp32"))
    first = ir_folder(folder, "int8")
    assert cached_ir(folder, "int8") == first
    written = (first / "decoder.bin").stat().st_mtime_ns
    lines: list[str] = []
    assert export_openvino(str(folder), "int8", progress=lines.append) == first
    assert "reusing" in lines[0] and (first / "decoder.bin").stat().st_mtime_ns == written

    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["layer_norm_eps"] = 1e-6  # a changed checkpoint
    (folder / "config.json").write_text(json.dumps(config))
    assert cached_ir(folder, "int8") is None
    lines.clear()
    assert export_openvino(str(folder), "int8", progress=lines.append) == first
    assert [line[:5] for line in lines[:4]] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert cached_ir(folder, "int8") == first and (first / "decoder.bin").stat().st_mtime_ns != written
    assert (first / "decoder.xml").is_file() and (first / "image_encoder.xml").is_file()
    assert cached_ir(folder, "int4") is None  # another weight format is another export


def test_serving_the_ir_loads_no_torch_weights(checkpoint_copy, ov_int8, monkeypatch, images):
    def refuse(*args, **kwargs):
        raise AssertionError("the OpenVINO engine must not load the torch model")

    monkeypatch.setattr("transformers.Kosmos2ForConditionalGeneration.from_pretrained", refuse)
    engine = load_openvino_engine(str(checkpoint_copy), "int8", export_if_missing=False)
    policy = policy_from_settings({"max_new_tokens": 16})
    assert engine.run(images[:2], policy) == ov_int8.run(images[:2], policy)


def test_missing_ir_without_export_says_what_to_run(tiny_checkpoint, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    with pytest.raises(FileNotFoundError, match="kosmos2_engine.runtime.openvino.export"):
        load_openvino_engine(str(folder), "int4", export_if_missing=False)
    with pytest.raises(ValueError, match="int8"):
        load_openvino_engine(str(folder), "int2")


@pytest.mark.slow
def test_the_export_command_says_what_to_do_when_weights_are_absent(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kosmos2_engine.runtime.openvino.export", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_the_int8_act_ir_keeps_the_texts_and_95_percent_of_boxes_within_one_bin(torch_engine, checkpoint_copy):
    """The ``int8-act`` row (image encoder with int8 activations, calibrated on the export's
    generated scenes) against torch fp32 on 48 scenes it was not calibrated on, three tasks:
    at least 95% of texts equal and of boxes within one location bin (the rule a row keeps)."""
    import random

    import numpy as np

    from tests.tiny_model.scenes import draw_scene, draw_two_shapes

    engine = load_openvino_engine(str(checkpoint_copy), "int8-act")
    assert engine.backend.weights == "int8-act"
    rng = random.Random(99)
    drawn = [draw_two_shapes(rng, 160, 120) if i % 2 else draw_scene(rng, 160, 120) for i in range(48)]
    scenes = [np.asarray(image) for image, _ in drawn]
    grounding = {"task": "phrase_grounding", "phrases": ["a red circle", "a blue square", "a green triangle"]}
    texts = same_texts = boxes = within = 0
    for settings in ({}, grounding, {"task": "detailed_caption"}):
        policy = policy_from_settings(settings)
        for expected, got in zip(torch_engine.run(scenes, policy), engine.run(scenes, policy)):
            texts, same_texts = texts + 1, same_texts + (got.text == expected.text)
            for box, reference in zip(got.boxes, expected.boxes):
                boxes += 1
                within += max(abs(a - b) for a, b in zip(box.xyxy, reference.xyxy)) <= 1 / GRID + 1e-9
    assert boxes > 150 and same_texts / texts >= 0.95 and within / boxes >= 0.95, (same_texts, texts, within, boxes)


def test_the_quantised_image_encoder_runs_int8_activations_near_fp32_embeddings(checkpoint_copy, ov_fp32, images):
    """NNCF post-training quantisation of the image encoder (``bench.openvino_bench``'s
    ``openvino-int8-act``), calibrated on the test scenes: its graph quantises activations
    (FakeQuantize nodes, none in fp32) and its embeddings point where fp32's do (cosine >= 0.95
    per image)."""
    import numpy as np
    import openvino as ov

    from kosmos2_engine.runtime.openvino.convert import quantize_image_encoder
    from kosmos2_engine.runtime.openvino.export import IMAGE_ENCODER

    encoder = ov.Core().read_model(str(ir_folder(checkpoint_copy, "fp32") / IMAGE_ENCODER))
    pixels = [ov_fp32.preprocess([image]) for image in images]
    quantized = quantize_image_encoder(encoder, pixels)
    assert not any(op.get_type_name() == "FakeQuantize" for op in encoder.get_ops())
    assert sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()) > 4
    fp32, int8 = (ov.Core().compile_model(model, "CPU") for model in (encoder, quantized))
    for image_pixels in pixels:
        ours, reference = (np.asarray(model(image_pixels)[0]).ravel() for model in (int8, fp32))
        assert ours @ reference / (np.linalg.norm(ours) * np.linalg.norm(reference)) >= 0.95


def test_calibration_comes_from_a_folder_of_the_users_images_or_is_refused_naming_why(
    checkpoint_copy, tmp_path, capsys
):
    """``--calibration FOLDER``: its readable images (others skipped) as the engine prepares
    them; a folder without one, or ``--calibration`` with another format, is exit 2 naming the
    option, before anything is loaded."""
    import numpy as np
    from PIL import Image

    from kosmos2_engine.runtime.openvino.export import calibration_pixels, main

    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    Image.new("RGB", (90, 60), (200, 30, 30)).save(photos / "a.png")
    Image.new("RGB", (40, 80), (30, 30, 200)).save(photos / "more" / "b.jpg")
    (photos / "broken.png").write_bytes(b"not a png")
    pixels = calibration_pixels(checkpoint_copy, photos)
    side = Kosmos2Engine.load(str(checkpoint_copy)).image_size
    assert [p.shape for p in pixels] == [(1, 3, side, side)] * 2 and all(p.dtype == np.float32 for p in pixels)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(checkpoint_copy), "--weights", "int8-act", "--calibration", str(empty)]) == 2
    assert "--calibration: no image under" in capsys.readouterr().err
    assert main([str(checkpoint_copy), "--weights", "int8", "--calibration", str(photos)]) == 2
    assert "--calibration is for --weights int8-act" in capsys.readouterr().err
