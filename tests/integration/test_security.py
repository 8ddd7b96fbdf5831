"""Security, in process: log hygiene, the URL fetcher, the front door (FrontDoor) on an app
with a key, deploy planning, and the SDK seam. The same attacks against the real server on
127.0.0.1 are in test_hostile_routes.py."""

from __future__ import annotations

import base64
import contextlib
import http.server
import logging
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
from supervisely.nn.inference import Inference

from kosmos2_app import sdk_seam
from kosmos2_app.config import AccessPolicy, UrlFetchPolicy
from kosmos2_app.http.front_door import FrontDoor
from kosmos2_app.log_hygiene import MAX_TEXT, REDACTED, LogHygieneFilter, tidy
from kosmos2_app.routes.deploy import plan_deploy
from kosmos2_app.routes.url_fetch import FetchRefused, ImageFetcher, redact_url
from tests.support.app_harness import REPO

SERVER_TOKEN = "SERVER-SECRET-5d1f0a"
CLIENT_TOKEN = "CLIENT-SECRET-93be27"
KEY = "k" * 24


@pytest.mark.parametrize(
    "value,expected",
    [
        (
            '{"settings": {"max_new_tokens": 4}, "api_token": "abc123"}',
            '{"settings": {"max_new_tokens": 4}, "api_token": "***"}',
        ),
        (
            {"state": {"apiToken": "x"}, "items": [{"x-api-key": "y", "n": 1}]},
            {"state": {"apiToken": REDACTED}, "items": [{"x-api-key": REDACTED, "n": 1}]},
        ),
        ("GET /x?api_token=abc&page=2", "GET /x?api_token=***&page=2"),
        ("max_new_token=5 max_new_tokens: 7", "max_new_token=5 max_new_tokens: 7"),
        ("fetching https://alice:s3cret@example.com/a.png now", "fetching https://***@example.com/a.png now"),
        ({"image_url": "http://u:p@h/x"}, {"image_url": "http://***@h/x"}),
    ],
)
def test_tidy_replaces_secrets_and_nothing_else(value, expected):
    assert tidy(value) == expected


def test_tidy_cuts_long_text_and_big_containers():
    state = {"image_base64": "A" * 5_000_000, "regions": list(range(1000))}
    tidied = tidy(state)
    assert len(tidied["image_base64"]) < MAX_TEXT + 40 and "5000000 characters" in tidied["image_base64"]
    assert len(tidied["regions"]) == 51 and tidied["regions"][-1] == "… 950 more items"
    assert len(repr(tidied)) < 3 * MAX_TEXT


def test_the_filter_tidies_message_arguments_and_extra_fields(monkeypatch):
    monkeypatch.setenv("API_TOKEN", SERVER_TOKEN)
    record = logging.LogRecord("logger", logging.DEBUG, __file__, 1, "token %s in %s", (SERVER_TOKEN, "x"), None)
    record.state = {"api_token": CLIENT_TOKEN, "big": "B" * 100_000}
    assert LogHygieneFilter().filter(record)
    assert record.getMessage() == "token *** in x" and record.state["api_token"] == REDACTED
    assert len(record.state["big"]) < MAX_TEXT + 40


def test_redact_url_hides_credentials_only():
    assert redact_url("https://u:p@host:8/a?b=1") == "https://***@host:8/a?b=1"
    assert redact_url("https://host/a") == "https://host/a"


@pytest.fixture(scope="module")
def loopback_site():
    """A tiny HTTP server on 127.0.0.1: /a.png answers 5 bytes, /big a declared 10 MB, /redirect
    a redirect to /a.png, /missing a 404 with a body that must not be passed on. Yields
    (port, the paths requested)."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            if self.path == "/trickle":  # a byte every 0.3 s: no single read ever times out
                self.send_response(200)
                self.send_header("content-length", "100")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(100):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.3)
                return
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("location", "/a.png")
                self.end_headers()
                return
            body = {"/a.png": b"hello", "/big": b""}.get(self.path, b"SECRET UPSTREAM BODY")
            self.send_response(200 if self.path in ("/a.png", "/big") else 404)
            self.send_header("content-length", str(10 << 20 if self.path == "/big" else len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/a.png",
        "http://localhost:{port}/a.png",
        "http://[::1]:{port}/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x.png",
        "http://192.168.0.1/x.png",
        "http://[::ffff:127.0.0.1]:{port}/a.png",
        "http://0.0.0.0:{port}/a.png",
        "http://[2002:7f00:1::]:{port}/a.png",  # 6to4 of 127.0.0.1
        "http://[64:ff9b::7f00:1]:{port}/a.png",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::a01:203]/x.png",  # NAT64 of 10.1.2.3
        "http://[2001:0:4136:e378:8000:63bf:80ff:fefe]/x.png",  # Teredo, client 127.0.1.1
    ],
)
def test_non_public_addresses_are_refused_before_any_connection_and_not_named(loopback_site, url):
    port, seen = loopback_site
    before = len(seen)
    with pytest.raises(FetchRefused, match="is not a public address") as refused:
        ImageFetcher(UrlFetchPolicy()).fetch(url.format(port=port))
    assert refused.value.status == 400 and len(seen) == before
    host = urlsplit(url.format(port=port)).hostname  # what the client sent, never what it resolves to
    assert str(refused.value).startswith(f"image_url: '{host}' is not a public address;"), str(refused.value)


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "http:///a", ""])
def test_only_http_and_https_urls_with_a_host_are_fetched(url):
    with pytest.raises(FetchRefused, match="http"):
        ImageFetcher(UrlFetchPolicy()).fetch(url)


def test_the_connected_socket_is_checked_too(loopback_site, monkeypatch):
    """If a host resolved to a public address when checked and to loopback when connected (DNS
    rebinding), the socket-level check refuses it."""
    port, seen = loopback_site
    fetcher = ImageFetcher(UrlFetchPolicy())
    monkeypatch.setattr(fetcher, "_check_url", lambda url: None)  # the first check is fooled
    before = len(seen)
    with pytest.raises(FetchRefused, match="not a public address"):
        fetcher.fetch(f"http://127.0.0.1:{port}/a.png")
    assert len(seen) == before


def test_an_allowed_host_is_fetched_with_redirects_status_and_size_checked(loopback_site):
    port, seen = loopback_site
    fetcher = ImageFetcher(UrlFetchPolicy(allowlist=(f"127.0.0.1:{port}",), max_bytes=1 << 20))
    assert fetcher.fetch(f"http://127.0.0.1:{port}/a.png") == b"hello"
    assert fetcher.fetch(f"http://127.0.0.1:{port}/redirect") == b"hello"
    with pytest.raises(FetchRefused) as missing:
        fetcher.fetch(f"http://127.0.0.1:{port}/missing")
    assert missing.value.status == 400 and "HTTP 404" in str(missing.value)
    assert "SECRET" not in str(missing.value)
    with pytest.raises(FetchRefused) as big:
        fetcher.fetch(f"http://127.0.0.1:{port}/big")
    assert big.value.status == 413
    other_port = ImageFetcher(UrlFetchPolicy(allowlist=("127.0.0.1:1",)))
    with pytest.raises(FetchRefused, match="not a public address"):
        other_port.fetch(f"http://127.0.0.1:{port}/a.png")
    cidr = ImageFetcher(UrlFetchPolicy(allowlist=("127.0.0.0/8",)))
    assert cidr.fetch(f"http://localhost:{port}/a.png") == b"hello"


def test_a_trickling_host_is_cut_off_at_the_deadline_of_the_whole_fetch(loopback_site):
    port, _ = loopback_site
    fetcher = ImageFetcher(UrlFetchPolicy(allowlist=(f"127.0.0.1:{port}",), timeout_s=1.0))
    started = time.monotonic()
    with pytest.raises(FetchRefused, match=r"did not send the image within 1 s \(KOSMOS2_URL_TIMEOUT_S\)"):
        fetcher.fetch(f"http://127.0.0.1:{port}/trickle")
    assert time.monotonic() - started < 1.6


@pytest.mark.parametrize("entry", ["http://x/", "a b", "host:port"])
def test_a_malformed_allowlist_entry_is_named(monkeypatch, entry):
    monkeypatch.setenv("KOSMOS2_URL_ALLOWLIST", f"127.0.0.1,{entry}")
    with pytest.raises(ValueError, match="KOSMOS2_URL_ALLOWLIST"):
        UrlFetchPolicy.from_environment()


def test_a_short_key_is_refused(monkeypatch):
    monkeypatch.setenv("KOSMOS2_API_KEY", "short")
    with pytest.raises(ValueError, match="at least 16"):
        AccessPolicy.from_environment()


def _guarded(policy: AccessPolicy, widgets=()):
    """A plain Starlette app that echoes what reached it, behind the guard."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.testclient import TestClient

    async def echo(request: Request):
        body = await request.body()
        return JSONResponse(
            {"path": request.url.path, "body": body.decode(), "type": request.headers.get("content-type")}
        )

    app = Starlette()
    app.add_route("/{path:path}", echo, methods=["GET", "POST"])
    guard = FrontDoor(app, policy, lambda path: path in widgets, max_body_bytes=1 << 16)
    return TestClient(guard, client=("127.0.0.1", 50000))  # a caller on this machine


def _basic(password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"kosmos:{password}".encode()).decode()}


def test_with_a_key_every_route_but_health_needs_it():
    client = _guarded(AccessPolicy(api_key=KEY))
    for path in ("/get_session_info", "/inference_image", "/sly/state", "/", "/ButtonAutoIdX/button_clicked_cb"):
        refused = client.post(path, json={})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert client.post(path, json={}, headers=_basic("wrong" * 5)).status_code == 401
        assert client.post(path, json={}, headers=_basic(KEY)).status_code == 200
        assert client.post(path, json={}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    for path in ("/is_alive", "/livez", "/is_ready", "/readyz"):
        assert client.get(path).status_code == 200


def test_only_loopback_addresses_count_as_this_machine():
    from kosmos2_app.http.access import from_loopback

    assert from_loopback({"client": ("127.0.0.1", 1)}) and from_loopback({"client": ("::1", 1)})
    for client in (("testclient", 50000), ("localhost", 1), ("10.0.0.7", 1), None):
        assert not from_loopback({"client": client}), client


def test_without_a_key_control_routes_are_for_loopback_callers_and_shutdown_for_nobody():
    widgets = {"/ButtonAutoIdX/button_clicked_cb"}
    local = _guarded(AccessPolicy(), widgets)
    assert local.post("/sly/shutdown").status_code == 403
    assert (
        local.post("/deploy_from_api", json={"state": {"deploy_params": {}}}).status_code == 200
    )  # the test client is local
    from starlette.testclient import TestClient

    remote = TestClient(local.app, client=("10.0.0.7", 5000))
    for path in ("/deploy_from_api", "/freeze_model", "/ButtonAutoIdX/button_clicked_cb", "/sly/shutdown"):
        assert remote.post(path, json={}).status_code == 403, path
    assert remote.post("/get_session_info", json={}).status_code == 200
    platform = TestClient(_guarded(AccessPolicy(production=True), widgets).app, client=("10.0.0.7", 5000))
    assert (
        platform.post("/deploy_from_api", json={"state": {"deploy_params": {}}}).status_code == 200
    )  # through the platform's proxy


@pytest.mark.parametrize(
    "path",
    [
        "/debug",
        "/docs",
        "/sly/docs",
        "/sly/openapi.json",
        "/sly/css/__init__.py",
        "/sly/css/app/fastapi/subapp.py",
        "/sly/css/app/widgets/card/template.html",
    ],
)
def test_routes_nobody_needs_are_gone(path):
    client = _guarded(AccessPolicy())
    assert client.post(path).status_code == 404 and client.get(path).status_code == 404
    assert client.get("/sly/css/app/widgets/card/style.css").status_code == 200
    assert _guarded(AccessPolicy(debug_route=True)).post("/debug").status_code == 200


@pytest.mark.parametrize(
    "body,message",
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'"state"', "must be a JSON object"),
        (b'{"state": [1]}', "'state' must be a JSON object"),
        (b'{"context": "x"}', "'context' must be"),
        (b'{"state": {"x": "\xff"}}', "not UTF-8 JSON"),
        (b"{", "not UTF-8 JSON"),
        (b'{"server_address": "http://127.0.0.1:1", "api_token": "t"}', "'server_address' must be"),
        (b'{"state": {"server_address": "https://evil.example", "api_token": "t"}}', "'state.server_address' must be"),
    ],
)
def test_json_bodies_of_the_wrong_shape_are_400s_that_say_so(body, message):
    client = _guarded(AccessPolicy(server_address="https://app.supervisely.com"))
    for headers in ({"Content-Type": "application/json"}, {}):
        response = client.post("/inference_image_url", content=body, headers=headers)
        assert response.status_code == 400 and message in response.json()["message"], (body, response.text)


def test_json_bodies_reach_the_app_normalised_and_marked_as_api_calls():
    client = _guarded(AccessPolicy(server_address="https://app.supervisely.com"), {"/W/cb"})
    seen = client.post("/get_session_info", content=b"").json()  # no content type, no body
    assert seen["type"] == "application/json"
    assert seen["body"] == '{"state": {}, "context": {"outside_request": true}}'
    seen = client.post("/x", json={"state": None, "server_address": "app.supervisely.com/"}).json()
    assert '"state": {}' in seen["body"]
    assert client.post("/W/cb", json={"state": {"a": 1}}).json()["body"] == '{"state": {"a": 1}, "context": {}}'
    over = client.post("/x", content=b"{" + b" " * 70_000 + b"}", headers={"Content-Type": "application/json"})
    assert over.status_code == 413


def test_session_info_keeps_the_server_token_away_from_the_platform():
    info = _guarded(AccessPolicy(server_address="http://127.0.0.1:9")).post("/sly/session-info").json()
    assert info == {"TASK_ID": None, "SERVER_ADDRESS": "http://127.0.0.1:9", "API_TOKEN": None}
    assert _guarded(AccessPolicy(production=True)).post("/sly/session-info").json()["path"] == "/sly/session-info"


ROWS = [
    {
        "meta": {
            "model_name": "Kosmos-2",
            "backend": "pytorch",
            "model_files": {"checkpoint": "microsoft/kosmos-2-patch14-224"},
        }
    },
    {
        "meta": {
            "model_name": "Kosmos-2 OpenVINO int8",
            "backend": "openvino-int8",
            "model_files": {"checkpoint": "microsoft/kosmos-2-patch14-224"},
        }
    },
]


@pytest.mark.parametrize(
    "state,field",
    [
        (None, "deploy_params"),
        ({}, "deploy_params"),
        ({"deploy_params": "cpu"}, "deploy_params"),
        ({"deploy_params": {}, "model_name": "Kosmos-9"}, "model_name"),
        ({"deploy_params": {}}, "model_name"),
        ({"deploy_params": {"model_source": "Hub models"}, "model_name": "Kosmos-2"}, "model_source"),
        ({"deploy_params": {"model_source": "Custom models"}, "model_name": "Kosmos-2"}, "model_files.checkpoint"),
        (
            {
                "deploy_params": {"model_source": "Custom models", "model_files": {"checkpoint": "/a/"}},
                "model_name": "Kosmos-2 OpenVINO int8",
            },
            "model_name",
        ),
        ({"deploy_params": {"device": "cuda:7"}, "model_name": "Kosmos-2"}, "device"),
        ({"deploy_params": {"device": "tpu"}, "model_name": "Kosmos-2"}, "device"),
        ({"deploy_params": {"device": 3}, "model_name": "Kosmos-2"}, "device"),
        ({"deploy_params": {"device": "cuda"}, "model_name": "Kosmos-2 OpenVINO int8"}, "device"),
        ({"deploy_params": {"runtime": "TensorRT"}, "model_name": "Kosmos-2"}, "runtime"),
        ({"deploy_params": {"model_files": {"checkpoint": "/etc"}}, "model_name": "Kosmos-2"}, "model_files"),
    ],
)
def test_a_deploy_request_is_checked_before_anything_is_touched(state, field):
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as refused:
        plan_deploy(state, ROWS)
    assert refused.value.status_code == 400 and field in refused.value.detail


def test_a_deploy_request_as_model_api_sends_it_is_planned():
    state = {
        "deploy_params": {
            "model_files": {},
            "model_source": "Pretrained models",
            "model_info": {},
            "device": "cpu",
            "runtime": None,
        },
        "model_name": "kosmos-2 openvino INT8",
    }
    plan = plan_deploy(state, ROWS)
    assert (plan.model_name, plan.device, plan.runtime) == ("Kosmos-2 OpenVINO int8", "cpu", "PyTorch")


def test_the_sdk_seam_names_what_an_upgrade_removed(monkeypatch):
    sdk_seam.check_sdk()  # the pinned SDK has everything
    monkeypatch.delattr(Inference, "_inference_images")
    with pytest.raises(sdk_seam.SdkChangedError, match=r"Inference\._inference_images"):
        sdk_seam.check_sdk()


def test_no_module_but_the_seam_names_a_private_sdk_method():
    names = {name for methods in sdk_seam.PRIVATE_METHODS.values() for name in methods}
    names |= {name for attributes in sdk_seam.PRIVATE_ATTRIBUTES.values() for name in attributes}
    packages = ("kosmos2_app", "kosmos2_jobs", "supervisely_io")  # the ones that import the SDK
    for path in (path for package in packages for path in (REPO / "src" / package).rglob("*.py")):
        if path.name == "sdk_seam.py":
            continue
        text = path.read_text()
        used = sorted(name for name in names if f".{name}" in text or f"def {name}" in text)
        assert not used, f"{path.name} uses private SDK names {used}: go through sdk_seam"


def test_request_ids_are_random():
    manager = sdk_seam.UnguessableRequestsManager()
    ids = {manager.create().uuid for _ in range(200)}
    assert len(ids) == 200 and all(uuid.UUID(i).version == 4 for i in ids)
