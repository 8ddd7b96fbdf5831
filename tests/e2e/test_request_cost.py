"""The cost of a request is bounded, tried from outside against the real server
(``uvicorn main:model.app`` on 127.0.0.1, with a key, debug logging, a 2 s URL deadline and an
8 MB body cap): memory per request and per server, the event loop, the wall clock of a URL
fetch, every wrong shape a 4xx, and no secret in any log line.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import psutil
import pytest
import requests
from PIL import Image
from supervisely.nn.model.model_api import ModelAPI

from tests.support.app_harness import png_bytes
from tests.support.server_process import app_env, free_port, server_command, start, stop

KEY = "cost-key-" + "4b7d1e9a" * 3
AUTH = ("kosmos", KEY)
LARGE_SIDE = 6000  # 36 Mpx: a 1-bit PNG of a few kB that decodes to about 100 MB of RGB
CLIENT_TOKEN = "CLIENT-TOKEN-e81c44"


class Trickle(BaseHTTPRequestHandler):
    """``/slow.png`` sends one byte every 0.3 s (no single read ever times out)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "1000")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.3)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def trickle_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, trickle_port):
    """(process, URL, log path) of a deployed server with the bounds of the module docstring."""
    tmp = tmp_path_factory.mktemp("cost")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **app_env(tmp, tiny_checkpoint),
        "KOSMOS2_API_KEY": KEY,
        "LOG_LEVEL": "debug",
        "KOSMOS2_URL_TIMEOUT_S": "2",
        "KOSMOS2_URL_ALLOWLIST": f"127.0.0.1:{trickle_port}",
        "KOSMOS2_MAX_REQUEST_MB": "8",
        "KOSMOS2_MAX_IMAGE_PIXELS": str(LARGE_SIDE * LARGE_SIDE),
        "KOSMOS2_MAX_REQUEST_PIXELS": str(4 * LARGE_SIDE * LARGE_SIDE),
    }
    process = start(server_command(port), env, tmp / "server.log", url)
    try:
        ModelAPI(url=f"http://kosmos:{KEY}@127.0.0.1:{port}").load("Kosmos-2", device="cpu")
        yield process, url, tmp / "server.log"
    finally:
        stop(process)


def _post(url: str, path: str, **kwargs) -> requests.Response:
    return requests.post(f"{url}{path}", auth=AUTH, timeout=60, **kwargs)


def _large_png() -> bytes:
    image = Image.new("1", (LARGE_SIDE, LARGE_SIDE), 1)
    image.paste(0, (LARGE_SIDE // 3, LARGE_SIDE // 3, LARGE_SIDE // 2, LARGE_SIDE // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _peak_rss_during(process, call) -> tuple[int, object]:
    """(peak RSS in bytes of the server while ``call()`` runs, what it returned)."""
    server = psutil.Process(process.pid)
    peak, done = [server.memory_info().rss], threading.Event()

    def sample():
        while not done.is_set():
            peak.append(server.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = call()
    finally:
        done.set()
        sampler.join()
    return max(peak), result


def _batch(url: str, blobs: list[bytes]) -> requests.Response:
    files = [("files", (f"{index}.png", blob, "image/png")) for index, blob in enumerate(blobs)]
    return _post(
        url, "/inference_batch", files=files, data={"settings": json.dumps({"settings": {"max_new_tokens": 4}})}
    )


def test_four_large_images_cost_what_one_costs_and_five_are_a_413(server):
    process, url, _ = server
    blob = _large_png()
    assert len(blob) < 200_000
    assert _batch(url, [png_bytes(np.zeros((64, 64, 3), np.uint8))]).status_code == 200
    idle = psutil.Process(process.pid).memory_info().rss
    peak_one, one = _peak_rss_during(process, lambda: _batch(url, [blob]))
    peak_four, four = _peak_rss_during(process, lambda: _batch(url, [blob] * 4))
    assert one.status_code == 200 and four.status_code == 200, (one.text, four.text)
    assert [r["annotation"]["size"] for r in four.json()] == [{"height": LARGE_SIDE, "width": LARGE_SIDE}] * 4
    full_rgb = LARGE_SIDE * LARGE_SIDE * 3
    assert peak_one - idle < 4 * full_rgb, (peak_one - idle) >> 20  # one image costs a few copies at most
    assert peak_four - idle <= 1.25 * (peak_one - idle) + (64 << 20), (
        (peak_one - idle) >> 20,
        (peak_four - idle) >> 20,
    )

    five = _batch(url, [blob] * 5)
    assert five.status_code == 413 and "KOSMOS2_MAX_REQUEST_PIXELS" in five.json()["message"], five.text


def test_a_body_of_millions_of_lists_is_refused_without_stalling_health_checks(server):
    _, url, _ = server
    body = b'{"state": {"x": [' + b"[]," * 2_000_000 + b"[]]}}"  # 6 MB, under the 8 MB cap
    answer, latencies, done = {}, [], threading.Event()

    def send():
        answer["response"] = _post(url, "/get_deploy_info", data=body, headers={"content-type": "application/json"})
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    while not done.is_set():
        started = time.monotonic()
        assert requests.get(f"{url}/is_ready", timeout=10).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.01)
    sender.join()
    response = answer["response"]
    assert response.status_code == 400 and "more than 100000 JSON arrays and objects" in response.json()["message"]
    assert max(latencies) < 0.5, max(latencies)
    assert _post(url, "/get_deploy_info", json={}).status_code == 200  # and it goes on serving


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"state": {"a": ' + b"[" * 100 + b"]" * 100 + b"}}"],
    ids=["100000-deep", "100-deep"],
)
def test_deep_json_is_a_400(server, body):
    _, url, _ = server
    response = _post(url, "/get_deploy_info", data=body, headers={"content-type": "application/json"})
    message = response.json()["message"]
    assert response.status_code == 400 and ("JSON arrays and objects" in message or "nested more than 64" in message)
    deep = json.dumps({"settings": {}}).replace("{}", "[" * 100 + "]" * 100)
    form = _post(url, "/inference_image", files={"files": ("a.png", png_bytes(np.zeros((8, 8, 3), np.uint8)))},
                 data={"settings": deep})  # fmt: skip
    assert form.status_code == 400 and "settings: the form field is nested more than 64" in form.json()["message"]


def test_health_checks_read_no_body_and_need_no_key(server):
    _, url, _ = server
    for body in (b"\xff not json", b"[" * 50_000):
        assert requests.post(f"{url}/is_ready", data=body, timeout=10).status_code == 200
    assert requests.post(f"{url}/get_deploy_info", data=b"[" * 50_000, timeout=10).status_code == 401


def test_bodies_past_the_cap_are_413_however_they_are_sent(server):
    _, url, _ = server
    chunk = b"x" * (1 << 20)

    def chunked(count: int):
        yield b'{"state": {"blob": "'
        for _ in range(count):
            yield chunk
        yield b'"}}'

    response = _post(url, "/get_deploy_info", data=chunked(9), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "KOSMOS2_MAX_REQUEST_MB" in response.json()["message"]
    boundary = uuid.uuid4().hex

    def multipart():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'.encode()
        for _ in range(9):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    for route in ("/inference_image", "/inference_batch", "/inference_batch_async"):
        response = _post(url, route, data=multipart(), headers=headers)
        assert response.status_code == 413, (route, response.text)


def test_form_limits_are_4xx(server):
    _, url, _ = server
    tiny = png_bytes(np.zeros((8, 8, 3), np.uint8))
    cases = {
        "too many files": dict(files=[("files", ("a.png", tiny))] * 300),
        "too many fields": dict(files=[("files", ("a.png", tiny))], data={f"f{i}": "x" for i in range(40)}),
        "a field over 1 MB": dict(files=[("files", ("a.png", tiny))], data={"settings": "x" * (2 << 20)}),
        "no boundary": dict(data=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
    }
    for name, request in cases.items():
        response = _post(url, "/inference_batch", **request)
        assert 400 <= response.status_code < 500 and response.json()["success"] is False, (name, response.text)
    assert _batch(url, [tiny]).status_code == 200


@pytest.mark.parametrize(
    "route",
    ["/get_inference_progress", "/pop_inference_results", "/stop_inference", "/get_inference_status",
     "/get_inference_result", "/clear_inference_request"],
)  # fmt: skip
@pytest.mark.parametrize("value", [{}, [], 7, None])
def test_a_request_id_of_the_wrong_shape_is_a_400_naming_it(server, route, value):
    _, url, _ = server
    response = _post(url, route, json={"state": {"inference_request_uuid": value}})
    assert response.status_code == 400 and response.json()["message"].startswith("inference_request_uuid: ")


@pytest.mark.parametrize(
    "route,state,field",
    [
        ("/deploy_from_api", {"deploy_params": {"model_info": "str"}}, "deploy_params.model_info"),
        ("/inference_image_id", {"image_id": {}}, "image_id"),
        ("/inference_batch_ids", {"batch_ids": ["a"]}, "batch_ids"),
        ("/run_speedtest", {"projectId": "x", "num_iterations": 1, "batch_size": 1}, "projectId"),
        ("/inference_project_id_async", {"projectId": True}, "projectId"),
        ("/inference_image_url", {"image_url": 5}, "image_url"),
    ],
)
def test_fields_of_the_wrong_shape_are_400s_naming_them(server, route, state, field):
    _, url, _ = server
    response = _post(url, route, json={"state": state})
    assert response.status_code == 400 and response.json()["message"].startswith(f"{field}: "), response.text


def test_a_trickling_url_ends_at_its_deadline(server, trickle_port):
    _, url, _ = server
    started = time.monotonic()
    response = _post(
        url, "/inference_image_url", json={"state": {"image_url": f"http://127.0.0.1:{trickle_port}/slow.png"}}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 400 and "within 2 s (KOSMOS2_URL_TIMEOUT_S)" in response.json()["message"]
    assert elapsed < 3.5, elapsed


@pytest.mark.parametrize("host", ["[2002:7f00:1::]", "[64:ff9b::7f00:1]", "[::ffff:127.0.0.1]"])
def test_ipv6_forms_of_loopback_are_refused_without_saying_where_they_lead(server, trickle_port, host):
    _, url, _ = server
    response = _post(url, "/inference_image_url", json={"state": {"image_url": f"http://{host}:{trickle_port}/a.png"}})
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(f"image_url: '{host.strip('[]')}' is not a public address;")
    assert "127.0.0.1" not in response.json()["message"].replace(host.strip("[]"), "")


def test_no_token_reaches_the_log_at_debug_level(server):
    _, url, log = server
    for name in ("api_token", "apiToken", "Authorization"):
        state = {name: CLIENT_TOKEN, "image_ids": [1]}
        _post(url, "/smart_cache", json={"state": state, name: CLIENT_TOKEN})
    requests.get(f"{url}/get_session_info?key={CLIENT_TOKEN}&api_token={CLIENT_TOKEN}", timeout=10)
    _post(url, f"/get_session_info?key={CLIENT_TOKEN}", json={})
    time.sleep(1.0)
    text = log.read_text()
    assert "/get_session_info?key=***" in text  # the access log is on (debug), the key redacted
    assert text.count("Request state in cache endpoint") == 3  # the SDK logs each state, keys and all
    assert CLIENT_TOKEN not in text and KEY not in text


def test_background_caching_ends_with_the_server(server):
    """Last, since it stops the server: a /smart_cache task against an instance that never
    answers (local.env's 127.0.0.1:9) no longer holds the process on SIGTERM."""
    process, url, _ = server
    state = {"image_ids": [1, 2, 3], "server_address": "http://127.0.0.1:9", "api_token": CLIENT_TOKEN}
    response = _post(url, "/smart_cache", json={"state": state})
    assert response.status_code == 200 and response.json() == {"message": "Cache task started."}
    time.sleep(1.0)  # the task is retrying its calls now
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    assert time.monotonic() - started < 10
