"""Fuzzing: any settings a client can send give a policy or a SettingsError naming a field in
the engine, and a 200 or a 400 over HTTP; never a crash or a 500."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kosmos2_engine import GenerationPolicy, SettingsError, policy_from_settings
from kosmos2_engine.settings import TASK_OF_FIELD
from tests.support.app_harness import infer_image
from tests.support.helpers import SCENE_CASES, scene

FIELDS = sorted({"task", "conf", "top_k", "max_new_tokens", "confidence_threshold", *TASK_OF_FIELD})
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "caption",
            "vqa",
            "phrase_grounding",
            "region_description",
            "referring_expression",
            "custom",
            "detailed_caption",
            "<grounding>",
            "cat. dog",
            "1e400",
            "NaN",
        ]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SMALL_INTS = st.integers(-5, 700)
BOXES = st.lists(st.lists(SMALL_INTS, min_size=0, max_size=5), max_size=3)
SETTINGS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), JSON | SMALL_INTS | BOXES, max_size=6)


@settings(deadline=None, derandomize=True)
@given(SETTINGS)
def test_any_settings_give_a_policy_or_a_settings_error(raw):
    try:
        policy = policy_from_settings(raw)
    except SettingsError as error:
        named = error.field.split("[")[0] if error.field else None
        assert named in FIELDS or named in raw, f"the error names {named!r}, neither a setting nor a key sent"
        assert str(error)
    else:
        assert isinstance(policy, GenerationPolicy)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=SETTINGS)
def test_any_settings_over_http_give_200_or_400_never_500(served, raw):
    _, client = served
    try:
        json.dumps(raw, allow_nan=False)
    except ValueError:
        raw = {key: str(value) for key, value in raw.items()}  # what a JSON client can send
    response = infer_image(
        client, scene(*SCENE_CASES[0])[0], **{**raw, "max_new_tokens": 4} if "max_new_tokens" not in raw else raw
    )
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["message"]
