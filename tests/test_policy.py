"""Settings to GenerationPolicy: merging, aliases, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kosmos2_engine import DEFAULT_PROMPT, GenerationPolicy, SettingsError, policy_from_settings

DEFAULTS = yaml.safe_load((Path(__file__).parents[1] / "src" / "inference_settings.yaml").read_text())


def test_shipped_defaults_give_the_grounded_brief_caption():
    assert policy_from_settings({}, DEFAULTS) == GenerationPolicy(DEFAULT_PROMPT, 64, 0.0)


def test_request_wins_over_defaults_and_sdk_keys_are_ignored():
    settings = {"max_new_tokens": 7, "classes": None, "sliding_window_mode": "none", "recursive": False}
    assert policy_from_settings(settings, DEFAULTS).max_new_tokens == 7


def test_conf_alias_and_grounding_tag_added():
    policy = policy_from_settings({"conf": 0.4, "prompt": "A photo of"}, DEFAULTS)
    assert policy.confidence_threshold == 0.4
    assert policy.prompt == "<grounding> A photo of"


@pytest.mark.parametrize("settings,field", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -3}, "max_new_tokens"),
    ({"max_new_tokens": 10**6}, "max_new_tokens"),
    ({"max_new_tokens": "64"}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"),
    ({"confidence_threshold": 1.5}, "confidence_threshold"),
    ({"confidence_threshold": float("nan")}, "confidence_threshold"),
    ({"conf": "high"}, "confidence_threshold"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 12}, "prompt"),
    ({"prompt": "x" * 5000}, "prompt"),
])
def test_invalid_settings_name_the_field(settings, field):
    with pytest.raises(SettingsError) as error:
        policy_from_settings(settings, DEFAULTS)
    assert error.value.field == field and field in str(error.value)


def test_policy_is_frozen():
    with pytest.raises(AttributeError):
        GenerationPolicy().max_new_tokens = 3  # type: ignore[misc]
