"""Our static-cache decoder against transformers' generate, token for token (fp32, tiny model)."""

from __future__ import annotations

import logging

import pytest
import torch

from kosmos2_engine import DecoderStatus, GenerationPolicy, Kosmos2Engine, policy_from_settings
from kosmos2_engine.decode_batches import length_sorted_batches, run_splitting_on_oom
from kosmos2_engine.outputs import stop_token_ids, until_stop
from kosmos2_engine.prompts import encode_prompt
from kosmos2_engine.runtime.torch.decoder import BATCH_BUCKETS, StaticDecoder
from kosmos2_engine.tasks import plan_jobs
from tests.support.compilers import faithful_compile, miscompiling_compile
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, two_shapes
from tests.support.hf_reference import hf_greedy

# One prompt of every task (the engine's own templates), of many token lengths.
TASK_SETTINGS = [
    {"task": "caption"},
    {"task": "detailed_caption"},
    {"task": "phrase_grounding", "phrases": ["the blue circle", "a square"]},
    {"task": "referring_expression", "expression": "the shape on the left"},
    {"task": "region_description", "regions": [[0, 0, 99, 74]]},
    {"task": "vqa", "question": "What colour is the circle on the right of the image?"},
    {"task": "custom", "prompt": "A photo of"},
]


def task_prompts(size=(200, 150)) -> list[tuple[str, GenerationPolicy]]:
    prompts = []
    for settings in TASK_SETTINGS:
        policy = policy_from_settings({**settings, "max_new_tokens": 24})
        prompts += [(job.prompt.text, policy) for job in plan_jobs(policy, [size])]
    return prompts


@pytest.fixture(scope="module")
def images():
    return [scene(*case)[0] for case in SCENE_CASES[:2]] + [two_shapes(*TWO_SHAPE_CASES[0])[0]]


def reference_tokens(engine, embeds, row, prompt, policy):
    stops = stop_token_ids(engine.tokenizer, policy)
    out = hf_greedy(
        engine.backend.model,
        engine.tokenizer,
        embeds[row : row + 1],
        encode_prompt(engine.tokenizer, prompt),
        policy.max_new_tokens,
        list(stops),
    )
    return until_stop(out.tokens[0].tolist(), out.probs[0].tolist(), stops)


def test_every_task_batched_together_equals_hf_generate_one_by_one(engine, images):
    """All prompts of all tasks on three images: one mixed-length, left-padded batch per stop
    set, against HF generate per prompt with no padding."""
    embeds = engine.encode_images(images)
    cases = [(prompt, policy, row) for row in range(len(images)) for prompt, policy in task_prompts()]
    by_stops: dict = {}
    for case in cases:
        by_stops.setdefault(stop_token_ids(engine.tokenizer, case[1]), []).append(case)
    checked = 0
    for stops, group in by_stops.items():
        encoded = [encode_prompt(engine.tokenizer, prompt) for prompt, _, _ in group]
        assert len({len(e.ids) for e in encoded}) > 1  # the batch really is padded
        rows = torch.tensor([row for _, _, row in group])
        ours = StaticDecoder(engine.backend.model).decode(embeds[rows], encoded, 24, stops)
        for i, (prompt, policy, row) in enumerate(group):
            ids, probs = until_stop(ours.tokens[i].tolist(), ours.probs[i].tolist(), stops)
            expected_ids, expected_probs = reference_tokens(engine, embeds, row, prompt, policy)
            assert ids == expected_ids, prompt
            assert probs == pytest.approx(expected_probs, abs=1e-4)
            checked += 1
    assert checked == len(cases) == 3 * 8


def test_engine_run_equals_hf_generate_from_pixels(engine, images):
    """The whole engine (embedding reuse, batching, our decoder) against the plain HF path the
    public app uses: processor(images, text) then model.generate(pixel_values=...)."""
    policy = policy_from_settings(
        {"task": "phrase_grounding", "phrases": ["circle", "the red square"], "max_new_tokens": 24}
    )
    stops = list(stop_token_ids(engine.tokenizer, policy))
    jobs = plan_jobs(policy, [(200, 150)] * len(images))
    generations = engine.generate(
        engine.encode_images(images), [job.prompt.text for job in jobs], policy, image_rows=[job.image for job in jobs]
    )
    for job, generation in zip(jobs, generations):
        inputs = engine.processor(images=images[job.image], text=job.prompt.text, return_tensors="pt")
        out = engine.backend.model.generate(**inputs, max_new_tokens=24, do_sample=False, eos_token_id=stops)
        expected = out[0, inputs["input_ids"].shape[1] :].tolist()
        assert list(generation.token_ids) == until_stop(expected, expected, stops)[0]


def test_padding_does_not_change_a_prompt_output(engine, images):
    """transformers' Kosmos-2 shifts a left-padded row's positions; ours must not."""
    embeds = engine.encode_images(images[:1])
    short = encode_prompt(engine.tokenizer, "<grounding>An image of")
    long = encode_prompt(
        engine.tokenizer,
        "<grounding> Question: What colour is the circle on the right of the image? Answer: a picture of",
    )
    decoder = StaticDecoder(engine.backend.model)
    alone = decoder.decode(embeds, [short], 20, [engine.tokenizer.eos_token_id])
    padded = decoder.decode(embeds.expand(2, -1, -1), [short, long], 20, [engine.tokenizer.eos_token_id])
    steps = alone.tokens.shape[1]
    assert len(long.ids) - len(short.ids) >= 8
    assert padded.tokens[0, :steps].tolist() == alone.tokens[0].tolist()


def test_prompts_sharing_an_image_share_its_prefix_and_decode_the_same(engine, images):
    """Three prompts on image 0 and one on image 2, by ``image_rows`` (the image part runs
    once per image), against one embedding row per prompt."""
    embeds = engine.encode_images(images)
    prompts = [encode_prompt(engine.tokenizer, prompt) for prompt, _ in task_prompts()[:4]]
    rows = [0, 2, 0, 0]
    stops = [engine.tokenizer.eos_token_id]
    decoder = StaticDecoder(engine.backend.model)
    prefix_images = []
    real_prefix = decoder._prefix_cache
    decoder._prefix_cache = lambda embeds, *args: prefix_images.append(len(embeds)) or real_prefix(embeds, *args)
    shared = decoder.decode(embeds, prompts, 20, stops, image_rows=rows)
    repeated = StaticDecoder(engine.backend.model).decode(embeds[torch.tensor(rows)], prompts, 20, stops)
    assert prefix_images == [3]  # the embeddings given; the engine passes only the images used
    assert torch.equal(shared.tokens, repeated.tokens)
    decoder.decode(embeds, prompts[:3], 20, stops, image_rows=[0, 1, 2])
    assert prefix_images == [3]  # one prompt per image: one pass per whole prompt, no prefix pass


def test_decoding_stops_when_every_row_has_stopped(engine, images):
    embeds = engine.encode_images(images[:1])
    prompt = encode_prompt(engine.tokenizer, "<grounding><phrase> a shape</phrase>")
    stops = stop_token_ids(engine.tokenizer, policy_from_settings({"task": "phrase_grounding", "phrases": "shape"}))
    out = StaticDecoder(engine.backend.model).decode(embeds, [prompt], 200, stops)
    assert out.tokens.shape[1] <= 8  # </object> comes at step 4; stops are read every 8 steps
    forced = StaticDecoder(engine.backend.model).decode(embeds, [prompt], 30, stop_ids=())
    assert forced.tokens.shape == (1, 30) and forced.probs.dtype == torch.float32


def test_batch_buckets_pad_rows_only_when_compiled(engine):
    eager, compiled = StaticDecoder(engine.backend.model), StaticDecoder(engine.backend.model)
    compiled.compiled = True  # bucketing only; no graph is compiled by bucket()
    assert [eager.bucket(n) for n in (1, 3, 9, 17)] == [1, 3, 9, 17]
    assert [compiled.bucket(n) for n in (1, 3, 9, 17, 64)] == [1, 4, 16, 32, 64]
    assert compiled.bucket(100) == 100 and BATCH_BUCKETS[-1] == 64


def test_eager_decoder_keeps_one_cache(engine, images):
    embeds = engine.encode_images(images)
    prompt = encode_prompt(engine.tokenizer, "<grounding>An image of")
    decoder = StaticDecoder(engine.backend.model)
    for rows, tokens in [(1, 4), (3, 4), (3, 100), (2, 4)]:
        decoder.decode(embeds[:rows], [prompt] * rows, tokens, stop_ids=())
        assert list(decoder._caches) == [(rows, 128 if tokens == 4 else 192)]


def test_length_sorted_batches_group_similar_lengths():
    batches = length_sorted_batches([9, 3, 7, 3, 12, 5], max_batch_size=4)
    assert batches == [[1, 3, 5, 2], [0, 4]]
    assert sorted(i for batch in batches for i in batch) == list(range(6))


def test_out_of_memory_halves_the_batch_and_loses_nothing(caplog):
    sizes = []

    def run(items):
        sizes.append(len(items))
        if len(items) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return [item * 10 for item in items]

    with caplog.at_level(logging.WARNING, logger="kosmos2_engine.decode_batches"):
        assert run_splitting_on_oom(run, list(range(7))) == [i * 10 for i in range(7)]
    assert sizes == [7, 3, 1, 2, 4, 2, 2]
    assert len(caplog.records) == 3 and "batch of 7" in caplog.records[0].getMessage()


def test_out_of_memory_on_one_item_is_raised():
    def run(items):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.OutOfMemoryError):
        run_splitting_on_oom(run, [1, 2])


def test_engine_splits_a_batch_that_runs_out_of_memory(engine, images, monkeypatch):
    policy = GenerationPolicy(max_new_tokens=24)
    expected = [g.token_ids for g in engine.generate_texts(images, policy)]
    real_decode, seen = engine.backend.decoder.decode, []

    def tight_memory(embeds, prompts, *args, **kwargs):
        seen.append(len(prompts))
        if len(prompts) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_decode(embeds, prompts, *args, **kwargs)

    monkeypatch.setattr(engine.backend.decoder, "decode", tight_memory)
    assert [g.token_ids for g in engine.generate_texts(images, policy)] == expected
    assert seen == [3, 1, 2, 1, 1]


def test_a_failed_compilation_falls_back_to_eager_decoding(tiny_checkpoint, images, monkeypatch, caplog):
    engine = Kosmos2Engine.load(tiny_checkpoint, compile_decoder=True)
    assert engine.backend.decoder.compiled

    def broken_compiler(*args, **kwargs):
        raise RuntimeError("simulated inductor failure")

    monkeypatch.setattr(engine.backend.decoder, "_step", broken_compiler)
    with caplog.at_level(logging.WARNING, logger="kosmos2_engine.engine"):
        engine.warm_up()
    assert not engine.backend.decoder.compiled and "simulated inductor failure" in caplog.text
    assert caplog.text.count("decoding eagerly") == 1
    policy = GenerationPolicy(max_new_tokens=24)
    assert engine.generate_texts(images, policy) == Kosmos2Engine.load(tiny_checkpoint).generate_texts(images, policy)


@pytest.mark.slow
def test_compiled_decode_step_equals_eager(engine, images):
    """torch.compile(fullgraph=True, dynamic=True) of the one-token step (inductor on CPU here;
    CUDA graphs on GPU): no graph breaks, the same tokens with rows padded to a bucket, and two
    compile serves every batch bucket from 2 up and every cache length (batch 1, which dynamo
    specialises, compiles once more; a warm-up takes the buckets in ascending order). Static
    shapes compiled once per (bucket, length): the first phrase-grounding request after a
    caption warm-up stalled about 17 s on an H200."""
    from torch._dynamo.utils import counters

    embeds = engine.encode_images(images)
    prompts = [encode_prompt(engine.tokenizer, prompt) for prompt, _ in task_prompts()[:3]]
    stops = [engine.tokenizer.eos_token_id]
    eager = StaticDecoder(engine.backend.model)
    compiled_decoder = StaticDecoder(engine.backend.model, compile_step=True)
    graphs_before = counters["stats"]["unique_graphs"]
    for rows, new_tokens in ((2, 16), (3, 16), (3, 80)):  # buckets 2 and 4; lengths 128 and 192
        compiled = compiled_decoder.decode(embeds, prompts[:rows], new_tokens, stops)
        reference = eager.decode(embeds, prompts[:rows], new_tokens, stops)
        assert torch.equal(compiled.tokens, reference.tokens)
        assert torch.allclose(compiled.probs, reference.probs, atol=1e-4)
    assert compiled_decoder.bucket(3) == 4
    assert counters["stats"]["unique_graphs"] - graphs_before == 1


def test_a_compiled_step_that_differs_from_eager_is_caught_at_warm_up_and_served_eagerly(
    tiny_checkpoint, images, monkeypatch, caplog
):
    """The warm-up canary decodes compiled and eagerly: a miscompiled step (another token every
    fifth step) is caught, said once, and the engine decodes eagerly, with eager's tokens; a
    faithful compiler passes the same check and stays compiled."""
    policy = GenerationPolicy(max_new_tokens=24)
    expected = Kosmos2Engine.load(tiny_checkpoint, max_batch_size=2).generate_texts(images, policy)

    monkeypatch.setattr(torch, "compile", faithful_compile)
    faithful = Kosmos2Engine.load(tiny_checkpoint, compile_decoder=True, max_batch_size=2)
    with caplog.at_level(logging.WARNING, logger="kosmos2_engine.engine"):
        faithful.warm_up()
    assert faithful.decoder_status == DecoderStatus("compiled") and faithful.backend.compiled
    assert "decoding eagerly" not in caplog.text

    monkeypatch.setattr(torch, "compile", miscompiling_compile(every=5))
    engine = Kosmos2Engine.load(tiny_checkpoint, compile_decoder=True, max_batch_size=2)
    assert engine.generate_texts(images, policy) != expected  # what every request would get unchecked
    with caplog.at_level(logging.WARNING, logger="kosmos2_engine.engine"):
        engine.warm_up()
    status = engine.decoder_status
    assert (status.mode, status.fallback) == ("eager", "canary_mismatch") and not engine.backend.compiled
    assert "other tokens than eager decoding on the warm-up canary" in status.detail
    assert caplog.text.count("decoding eagerly") == 1 and status.detail[1:] in caplog.text
    assert engine.generate_texts(images, policy) == expected


def test_half_precision_boxes_that_move_from_float32_are_caught_at_warm_up_and_float32_is_kept(
    tiny_checkpoint, images, caplog
):
    """A bf16 engine grounds the canary in bf16 and in fp32: the tiny model's boxes agree and it
    stays bf16. With its bf16 location logits shifted by three cells each way (a half-precision
    path gone wrong, injected), the check catches it, says so once, and the engine keeps fp32,
    answering with an fp32 engine's boxes."""
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": ["a red circle", "a blue square"]})
    faithful = Kosmos2Engine.load(tiny_checkpoint, dtype=torch.bfloat16)
    faithful.warm_up()
    assert faithful.dtype == torch.bfloat16 and faithful.decoder_status.dtype_detail == ""

    engine = Kosmos2Engine.load(tiny_checkpoint, dtype=torch.bfloat16)
    first = engine.tokenizer.convert_tokens_to_ids("<patch_index_0000>")

    def shifted_in_bf16(module, args, logits):
        if logits.dtype != torch.bfloat16:
            return logits
        cells = logits[..., first : first + 1024]
        return torch.cat([logits[..., :first], cells.roll(3 * 32 + 3, dims=-1), logits[..., first + 1024 :]], dim=-1)

    engine.backend.model.text_model.lm_head.register_forward_hook(shifted_in_bf16)
    with caplog.at_level(logging.WARNING, logger="kosmos2_engine.engine"):
        engine.warm_up()
    assert engine.dtype == torch.float32 and "of float32's" in engine.decoder_status.dtype_detail
    assert caplog.text.count("running in float32 instead") == 1
    fp32 = Kosmos2Engine.load(tiny_checkpoint, dtype=torch.float32)  # scores differ: the weights went through bf16

    def boxes(engine):
        return [[(box.name, box.xyxy) for box in result.boxes] for result in engine.run(images, policy)]

    assert boxes(engine) == boxes(fp32)
