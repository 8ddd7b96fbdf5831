"""Every route the app serves, the SDK's included, fuzzed with request bodies of any shape
(Hypothesis): never a 5xx (but the 502 of the Supervisely instance the tests have none of, at
``127.0.0.1:9``), and every 4xx in the SDK's error shape, naming the field at fault
(or the body, or the route, when it is the whole request that is refused)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kosmos2_app.http.state_schema import DEPLOY_FIELDS, FIELDS
from kosmos2_engine.settings import TASK_OF_FIELD

# Routes that stop or replace what serves, or answer nothing a stranger may call.
LEFT_OUT = {"/sly/shutdown", "/debug", "/deploy_from_api"}
SETTING_NAMES = {"task", "conf", "top_k", "max_new_tokens", "confidence_threshold", *TASK_OF_FIELD}
NAMES = sorted({*FIELDS, "regions", "question", "image_base64", "rectangles", "classes"})

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from([0, 1, 7, -1, "", "abc", "1", "cpu", "Kosmos-2", "iVBORw0KGgo="])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6) | st.sampled_from(NAMES), inner, max_size=4)
    ),
    max_leaves=10,
)
STATES = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), JSON, max_size=5)
IDS = st.integers(1, 50)
# Values of the right kind, so that requests get past the shape check into the handlers.
WELL_TYPED = {
    name: {
        "a positive integer id": IDS,
        "a non-empty list of positive integer ids": st.lists(IDS, min_size=1, max_size=3),
        "a positive integer": st.integers(1, 3),
        "a non-negative integer": st.integers(0, 2),
        "the request id string an asynchronous route returned": st.text(min_size=1, max_size=8),
    }.get(kind.description, JSON)
    for name, kind in FIELDS.items()
}
TYPED_STATES = st.fixed_dictionaries({}, optional={name: value for name, value in WELL_TYPED.items()})
BODIES = st.one_of(
    st.fixed_dictionaries({"state": TYPED_STATES}),
    st.fixed_dictionaries({"state": STATES}),
    st.fixed_dictionaries({"state": STATES, "context": JSON}),
    JSON,
)


def _routes(model) -> list[str]:
    from kosmos2_app import sdk_seam

    server = sdk_seam.server_of(model)
    paths = {
        getattr(route, "path", "")
        for route in server.router.routes
        if "POST" in (getattr(route, "methods", None) or ())
    }
    return sorted(p for p in paths if p not in LEFT_OUT and "AutoId" not in p)  # not the page's own buttons


def _names_what_is_wrong(message: str, route: str, sent: object) -> bool:
    """Whether a refusal names the field at fault (or says the body or route is refused)."""
    sent_keys = (
        set(sent.get("state") or {}) if isinstance(sent, dict) and isinstance(sent.get("state"), dict) else set()
    )
    head = message.split(":", 1)[0]
    known = {*NAMES, *SETTING_NAMES, *DEPLOY_FIELDS, *sent_keys, "state", "context", "settings", "files"}
    return bool(set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", head)) & known) or message.startswith(
        ("The request body", f"{route}:")
    )


@pytest.fixture(scope="module")
def routes(served):
    return _routes(served[0])


def test_the_fuzzer_covers_the_sdk_routes(routes):
    assert {
        "/inference_image_id",
        "/get_inference_progress",
        "/run_speedtest",
        "/smart_cache",
        "/get_deploy_info",
    } <= set(routes)
    assert len(routes) >= 35, routes


@settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_body_on_any_route_is_answered_without_a_5xx(served, routes, data):
    _, client = served
    route = data.draw(st.sampled_from(routes), label="route")
    body = data.draw(BODIES, label="body")
    response = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
    unreachable = response.status_code == 502 and "Supervisely instance (SERVER_ADDRESS)" in response.text
    assert response.status_code < 500 or unreachable, (route, body, response.status_code, response.text[:500])
    if response.status_code >= 400:
        content = response.json()
        assert content["success"] is False and content["message"], (route, body, content)
        if response.status_code == 400:
            assert _names_what_is_wrong(content["message"], route, body), (route, body, content["message"])
