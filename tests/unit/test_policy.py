"""Settings to GenerationPolicy: tasks and their fields, merging, aliases, markup, and errors
that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kosmos2_engine import (
    MAX_ITEMS,
    MAX_PHRASES,
    TASKS,
    GenerationPolicy,
    SettingsError,
    find_markup,
    policy_from_settings,
)

DEFAULTS = yaml.safe_load((Path(__file__).parents[2] / "src" / "inference_settings.yaml").read_text())


def test_shipped_defaults_give_the_grounded_brief_caption():
    assert policy_from_settings({}, DEFAULTS) == GenerationPolicy(task="caption", max_new_tokens=64)


def test_shipped_defaults_list_every_setting_and_every_task():
    assert set(DEFAULTS) == {
        "task",
        "phrases",
        "expression",
        "top_k",
        "question",
        "regions",
        "prompt",
        "max_new_tokens",
        "confidence_threshold",
        *("mode", "reference_bbox", "reference_image_id", "reference_class_name"),  # kosmos2_app.reference_box
        *("masks", "keep_boxes", "propagate_masks"),  # kosmos2_app.masks
    }
    text = (Path(__file__).parents[2] / "src" / "inference_settings.yaml").read_text()
    assert all(f"#   {task} " in text for task in TASKS)


def test_request_wins_over_defaults_and_sdk_keys_are_ignored():
    settings = {"max_new_tokens": 7, "classes": None, "sliding_window_mode": "none", "recursive": False}
    assert policy_from_settings(settings, DEFAULTS).max_new_tokens == 7


def test_conf_alias():
    assert policy_from_settings({"conf": 0.4}, DEFAULTS).confidence_threshold == 0.4


@pytest.mark.parametrize(
    "phrases,expected",
    [
        ("cat. dog", ("cat", "dog")),
        ("person, red car.", ("person", "red car")),
        (["a red circle", " the square ", "a red circle"], ("a red circle", "the square")),
        ("circle", ("circle",)),
    ],
)
def test_phrases_from_a_list_or_a_string(phrases, expected):
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": phrases}, DEFAULTS)
    assert policy.phrases == expected


def test_each_task_takes_its_fields():
    assert (
        policy_from_settings({"task": "referring_expression", "expression": "the left one", "top_k": 3}, DEFAULTS).top_k
        == 3
    )
    assert policy_from_settings({"task": "vqa", "question": "What colour?"}, DEFAULTS).question == "What colour?"
    regions = policy_from_settings({"task": "region_description", "regions": [[1, 2, 30, 40]]}, DEFAULTS).regions
    assert regions == ((1.0, 2.0, 30.0, 40.0),)
    assert policy_from_settings({"task": "custom", "prompt": "An image of"}, DEFAULTS).prompt == "An image of"
    assert policy_from_settings({"task": " VQA ", "question": "Why?"}, DEFAULTS).task == "vqa"


@pytest.mark.parametrize(
    "settings,field",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 10**6}, "max_new_tokens"),
        ({"max_new_tokens": "64"}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"confidence_threshold": 1.5}, "confidence_threshold"),
        ({"confidence_threshold": float("nan")}, "confidence_threshold"),
        ({"conf": "high"}, "confidence_threshold"),
        ({"task": "segment"}, "task"),
        ({"task": 3}, "task"),
        ({"task": "phrase_grounding"}, "phrases"),
        ({"task": "phrase_grounding", "phrases": " . , "}, "phrases"),
        ({"task": "phrase_grounding", "phrases": []}, "phrases"),
        ({"task": "phrase_grounding", "phrases": 5}, "phrases"),
        ({"task": "phrase_grounding", "phrases": ["cat", 5]}, "phrases[1]"),
        ({"task": "phrase_grounding", "phrases": [f"p{i}" for i in range(MAX_PHRASES + 1)]}, "phrases"),
        ({"task": "phrase_grounding", "phrases": ["x" * 400]}, "phrases[0]"),
        ({"task": "referring_expression"}, "expression"),
        ({"task": "referring_expression", "expression": "   "}, "expression"),
        ({"task": "referring_expression", "expression": "dog", "top_k": 11}, "top_k"),
        ({"task": "vqa"}, "question"),
        ({"task": "vqa", "question": ["why"]}, "question"),
        ({"task": "custom"}, "prompt"),
        ({"task": "custom", "prompt": "   "}, "prompt"),
        ({"task": "custom", "prompt": "x" * 5000}, "prompt"),
        ({"task": "region_description", "regions": [[1, 2, 3]]}, "regions[0]"),
        ({"task": "region_description", "regions": [[10, 2, 5, 8]]}, "regions[0]"),
        ({"task": "region_description", "regions": [[-1, 2, 5, 8]]}, "regions[0]"),
        ({"task": "region_description", "regions": [[0, 0, "a", 8]]}, "regions[0]"),
        ({"task": "region_description", "regions": "0,0,5,5"}, "regions"),
        ({"task": "region_description", "regions": [[0, 0, 1, 1]] * (MAX_ITEMS + 1)}, "regions"),
        ({"question": "Why?"}, "question"),
        ({"prompt": "An image of"}, "prompt"),
        ({"task": "vqa", "question": "Why?", "phrases": "cat"}, "phrases"),
        ({"task": "custom", "prompt": "caf\udce9"}, "prompt"),
        ({"task": "vqa", "question": "what \ufffd\ufffd is it"}, "question"),
        ({"task": "phrase_grounding", "phrases": "cat. \ud800dog"}, "phrases"),
        ({"task": "phrase_grounding", "phrases": ["cat", "\ufffd"]}, "phrases[1]"),
        ({"max_new_token": 8}, "max_new_token"),
        ({"Phrase": "cat"}, "Phrase"),
        ({"topk": 3}, "topk"),
        ({"confidence_treshold": 0.5}, "confidence_treshold"),
    ],
)
def test_invalid_settings_name_the_field(settings, field):
    with pytest.raises(SettingsError) as error:
        policy_from_settings(settings, DEFAULTS)
    assert error.value.field == field and f"'{field}'" in str(error.value)


@pytest.mark.parametrize(
    "key",
    [
        "classes",
        "sliding_window_mode",
        "inference_mode",
        "existing_objects_iou_thresh",
        "batch_size",
        "model_prediction_suffix",
        "prompts",
        "text_prompt",
    ],
)
def test_keys_of_other_models_and_of_the_sdk_are_ignored(key):
    if key == "prompts":  # one letter from "prompt": a misspelling, refused
        with pytest.raises(SettingsError, match="did you mean 'prompt'"):
            policy_from_settings({key: "x"}, DEFAULTS)
    else:
        assert policy_from_settings({key: "x"}, DEFAULTS) == policy_from_settings({}, DEFAULTS)


MARKUP = [
    "<phrase>",
    "</phrase>",
    "<object>",
    "</object>",
    "<grounding>",
    "<patch_index_0001>",
    "</delimiter_of_multi_objects/>",
    "</s>",
    "<s>",
    "<image>",
    "</image>",
]


@pytest.mark.parametrize("tag", MARKUP)
@pytest.mark.parametrize(
    "task,field,wrap",
    [
        ("phrase_grounding", "phrases[0]", lambda text: [text]),
        ("referring_expression", "expression", str),
        ("vqa", "question", str),
    ],
)
def test_markup_in_user_text_is_refused(tag, task, field, wrap):
    name = {"phrases[0]": "phrases"}.get(field, field)
    with pytest.raises(SettingsError) as error:
        policy_from_settings({"task": task, name: wrap(f"the dog {tag} cat")}, DEFAULTS)
    assert error.value.field == field and tag in str(error.value)


def test_every_tag_and_special_token_of_the_tokenizer_counts_as_markup(engine):
    tokenizer = engine.tokenizer
    tags = [t for t in tokenizer.get_added_vocab() if t.startswith("<")]
    assert len(tags) >= 1024 + 11
    assert [t for t in tags + list(tokenizer.all_special_tokens) if find_markup(f"a {t} b") != t] == []


def test_plain_text_with_angle_brackets_is_fine():
    assert find_markup("a <b>bold</b> dog, 3 < 4 > 2") is None


def test_policy_is_frozen():
    with pytest.raises(AttributeError):
        GenerationPolicy().max_new_tokens = 3  # type: ignore[misc]
