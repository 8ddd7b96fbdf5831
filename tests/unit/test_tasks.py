"""Every Kosmos-2 task through the engine, on the tiny trained model and two-shape scenes."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest

from kosmos2_engine import GenerationPolicy, SettingsError, policy_from_settings
from tests.support.helpers import TWO_SHAPE_CASES, iou, two_shapes
from tests.tiny_model.scenes import draw_two_shapes, random_size

# Measured on 16 held-out scenes with the committed tiny model (see README, Tests), less a margin.
MIN_PICK_RATE, MIN_GROUNDING_HIT_RATE, MIN_DESCRIPTION_RATE, MIN_VQA_RATE = 0.6, 0.5, 0.5, 0.65


def held_out_pairs(count: int = 16, seed: int = 777):
    """Two-shape scenes no test case or training scene uses: [(RGB array, (left, right))]."""
    rng = random.Random(seed)
    scenes = [draw_two_shapes(rng, *random_size(rng)) for _ in range(count)]
    return [(np.asarray(image), shapes) for image, shapes in scenes]


def run_one(engine, image, **settings):
    [result] = engine.run([image], policy_from_settings(settings))
    return result


@contextlib.contextmanager
def vision_calls(engine):
    """Counts the images the vision tower sees: a list of batch sizes, one entry per call."""
    calls: list[int] = []
    hook = engine.backend.model.vision_model.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    try:
        yield calls
    finally:
        hook.remove()


def test_grounding_a_phrase_boxes_that_shape_and_not_the_other(engine):
    image, (circle, square) = two_shapes(*TWO_SHAPE_CASES[0])
    [box] = run_one(engine, image, task="phrase_grounding", phrases=["the blue circle"]).boxes
    assert box.name == "the blue circle" and 0 < box.score <= 1
    assert iou(box.xyxy, circle.xyxy) >= 0.5 and iou(box.xyxy, square.xyxy) < 0.2


@pytest.mark.parametrize("phrase", ["the red café square", "a red naïve square"])
def test_a_phrase_with_characters_the_tokenizer_does_not_know_keeps_its_box(engine, phrase):
    """The tiny tokenizer reads é and ï as <unk>: the token leaves the text, not the phrase."""
    image, (blue_circle, red_square) = two_shapes(*TWO_SHAPE_CASES[0])
    [result] = engine.run([image], policy_from_settings({"task": "phrase_grounding", "phrases": [phrase]}))
    [box] = result.boxes
    assert box.name == phrase and iou(box.xyxy, red_square.xyxy) >= 0.4 and iou(box.xyxy, blue_circle.xyxy) < 0.1


def test_grounding_picks_the_named_shape_on_held_out_scenes(engine):
    """Rates over random two-shape scenes: a pipeline fault (prompt, image rows, boxes) drops
    them to chance (about 0.5 for picking the closer shape)."""
    picked = hits = 0
    trials = [(image, target, other) for image, (a, b) in held_out_pairs() for target, other in ((a, b), (b, a))]
    for image, target, other in trials:
        boxes = run_one(engine, image, task="phrase_grounding", phrases=[f"the {target.colour} {target.shape}"]).boxes
        if boxes:  # no box counts as a miss
            picked += iou(boxes[0].xyxy, target.xyxy) > iou(boxes[0].xyxy, other.xyxy)
            hits += iou(boxes[0].xyxy, target.xyxy) >= 0.5
    assert picked / len(trials) >= MIN_PICK_RATE, (picked, len(trials))
    assert hits / len(trials) >= MIN_GROUNDING_HIT_RATE, (hits, len(trials))


def test_phrases_are_named_exactly_by_the_user_and_share_one_vision_pass(engine):
    images = [two_shapes(*case)[0] for case in TWO_SHAPE_CASES[:2]]
    phrases = "blue circle. red square, the circle"
    with vision_calls(engine) as calls:
        results = engine.run(images, policy_from_settings({"task": "phrase_grounding", "phrases": phrases}))
    assert calls == [2]  # one pass over both images, not one per phrase
    for result in results:
        assert [box.name for box in result.boxes] == ["blue circle", "red square", "the circle"]


def test_grounding_stops_at_the_end_of_the_box(engine):
    image, _ = two_shapes(*TWO_SHAPE_CASES[0])
    policy = GenerationPolicy(task="phrase_grounding", phrases=("the red square",), max_new_tokens=64)
    embeds = engine.encode_images([image])
    [generation] = engine.generate(embeds, ["<grounding><phrase> the red square</phrase>"], policy)
    assert engine.tokenizer.convert_ids_to_tokens(list(generation.token_ids))[-1] == "</object>"
    assert len(generation.token_ids) == 4


def test_referring_expression_by_side_and_its_top_k(engine):
    image, (left, right) = two_shapes(*TWO_SHAPE_CASES[1])
    [best] = run_one(engine, image, task="referring_expression", expression="the shape on the right").boxes
    assert iou(best.xyxy, right.xyxy) >= 0.5 and iou(best.xyxy, left.xyxy) < 0.2
    ranked = run_one(engine, image, task="referring_expression", expression="the shape on the right", top_k=4).boxes
    assert len(ranked) == 4 and {box.name for box in ranked} == {"the shape on the right"}
    assert [box.score for box in ranked] == sorted((box.score for box in ranked), reverse=True)
    greedy = [box for box in ranked if box.xyxy == best.xyxy]
    assert len(greedy) == 1 and greedy[0].score == pytest.approx(best.score, rel=1e-4)


def test_describing_a_region_names_the_shape_in_it(engine):
    image, shapes = two_shapes(*TWO_SHAPE_CASES[0])
    result = run_one(engine, image, task="region_description", regions=[list(s.pixel_ltrb) for s in shapes])
    assert result.descriptions == tuple(f"{shape.phrase}." for shape in shapes)
    assert result.boxes == () and result.text == ""


def test_region_descriptions_on_held_out_scenes(engine):
    right = total = 0
    for image, shapes in held_out_pairs():
        result = run_one(engine, image, task="region_description", regions=[list(s.pixel_ltrb) for s in shapes])
        right += sum(d == f"{s.phrase}." for d, s in zip(result.descriptions, shapes))
        total += len(shapes)
    assert right / total >= MIN_DESCRIPTION_RATE, right


def test_a_question_about_a_colour_is_answered_and_grounded(engine):
    image, (circle, _) = two_shapes(*TWO_SHAPE_CASES[0])
    result = run_one(engine, image, task="vqa", question="What colour is the circle?")
    assert result.text == "The circle is blue."
    [box] = result.boxes
    assert box.name == "The circle" and iou(box.xyxy, circle.xyxy) >= 0.5


def test_colour_questions_on_held_out_scenes(engine):
    right = total = 0
    for image, shapes in held_out_pairs():
        for shape in shapes:
            result = run_one(engine, image, task="vqa", question=f"What colour is the {shape.shape}?")
            right += result.text == f"The {shape.shape} is {shape.colour}."
            total += 1
    assert right / total >= MIN_VQA_RATE, right


def test_captions_name_both_shapes_left_to_right(engine):
    image, (left, right) = two_shapes(*TWO_SHAPE_CASES[2])
    brief = run_one(engine, image)
    assert brief.text == f"An image of {left.phrase} and {right.phrase} ."
    assert [box.name for box in brief.boxes] == [left.phrase, right.phrase]
    detailed = run_one(engine, image, task="detailed_caption")
    assert detailed.text == f"There is {left.phrase} on the left and {right.phrase} on the right."
    assert iou(detailed.boxes[1].xyxy, right.xyxy) >= 0.5


def test_custom_prompt_gets_the_grounding_tag(engine):
    image, _ = two_shapes(*TWO_SHAPE_CASES[3])
    caption = run_one(engine, image)
    for prompt in ("An image of", "<grounding> An image of"):
        custom = run_one(engine, image, task="custom", prompt=prompt)
        assert (custom.task, custom.text, custom.boxes) == ("custom", caption.text, caption.boxes)


def test_a_region_outside_the_image_is_refused_before_any_model_work(engine):
    image, _ = two_shapes(*TWO_SHAPE_CASES[0])  # 160 x 120
    with vision_calls(engine) as calls, pytest.raises(SettingsError) as error:
        run_one(engine, image, task="region_description", regions=[[0, 0, 10, 10], [100, 50, 170, 60]])
    assert error.value.field == "regions[1]" and "160x120" in str(error.value)
    assert calls == []
