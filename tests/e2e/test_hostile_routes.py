"""Every route the app exposes, the SDK's included, probed as a stranger would, through the real
server (``uvicorn main:model.app``) on 127.0.0.1 and the SDK's own clients.

Two servers: ``open_server`` runs as ``make serve`` does (no key, development mode, debug
logging, no URL allow-list); ``keyed_server`` has ``KOSMOS2_API_KEY`` and allows one loopback
port for ``image_url``. A recording HTTP server on another loopback port notes every request
that reaches it. The last test shuts the keyed server down with its key.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
import supervisely as sly
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from supervisely.nn.model.model_api import ModelAPI

from tests.support.helpers import SCENE_CASES, canonical, scene
from tests.support.server_process import app_env, free_port, server_command, start, stop
from tests.support.videos import moving_square_video

KEY = "test-key-" + "7f3a9c2e" * 3
SERVER_TOKEN = "SERVER-SECRET-5d1f0a"
CLIENT_TOKEN = "CLIENT-SECRET-93be27"
MARKER = f"KOSMOS2-UPLOAD-{uuid.uuid4().hex}"
SETTINGS = {"max_new_tokens": 16}


def marked_png(image: np.ndarray) -> bytes:
    """PNG bytes carrying :data:`MARKER` in a text chunk, so that a copy on disk can be found."""
    info = PngInfo()
    info.add_text("marker", MARKER)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def multipart(files: list[tuple[bytes, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart body with raw file names (NUL, backslashes and all, unescaped)."""
    boundary = uuid.uuid4().hex
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (boundary.encode(), name.encode(), value.encode())
        for name, value in fields.items()
    ]
    parts += [
        b'--%s\r\nContent-Disposition: form-data; name="files"; filename="%s"\r\n'
        b"Content-Type: image/png\r\n\r\n%s\r\n" % (boundary.encode(), name, data)
        for name, data in files
    ]
    return b"".join(parts) + b"--%s--\r\n" % boundary.encode(), f"multipart/form-data; boundary={boundary}"


class Recorder(BaseHTTPRequestHandler):
    """Notes every request; ``/img.png`` is an image, ``/sleep`` answers nothing for 20 s,
    ``/to-other-loopback`` redirects to 127.0.0.2."""

    seen: list = []
    image = b""
    stopping = threading.Event()

    def do_GET(self):
        Recorder.seen.append((self.command, self.path))
        if self.path == "/sleep":
            Recorder.stopping.wait(20)
            return
        if self.path == "/to-other-loopback":
            self.send_response(302)
            self.send_header("location", f"http://127.0.0.2:{self.server.server_address[1]}/img.png")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-length", str(len(Recorder.image)))
        self.end_headers()
        self.wfile.write(Recorder.image)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def recorder():
    """(port, the list of (method, path) that reached it)."""
    Recorder.image = marked_png(scene(*SCENE_CASES[0])[0])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], Recorder.seen
    Recorder.stopping.set()
    server.shutdown()


def _server(tmp: Path, checkpoint: str, **extra):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp / "server_tmp").mkdir()
    env = {**app_env(tmp, checkpoint), "TMPDIR": str(tmp / "server_tmp"), "KOSMOS2_URL_TIMEOUT_S": "2", **extra}
    process = start(server_command(port), env, tmp / "server.log", url)
    return process, url


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, tiny_checkpoint):
    """As ``make serve``, at LOG_LEVEL=debug with a server API_TOKEN: (process, url, its folder)."""
    tmp = tmp_path_factory.mktemp("open")
    process, url = _server(tmp, tiny_checkpoint, LOG_LEVEL="debug", API_TOKEN=SERVER_TOKEN)
    try:
        ModelAPI(url=url).load("Kosmos-2", device="cpu")
        yield process, url, tmp
    finally:
        stop(process)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_checkpoint, recorder):
    """With KOSMOS2_API_KEY, and the recorder's port allowed for image_url: (process, url, url with key)."""
    tmp = tmp_path_factory.mktemp("keyed")
    port, _ = recorder
    process, url = _server(tmp, tiny_checkpoint, KOSMOS2_API_KEY=KEY, KOSMOS2_URL_ALLOWLIST=f"127.0.0.1:{port}")
    keyed = url.replace("http://", f"http://kosmos:{KEY}@")
    try:
        ModelAPI(url=keyed).load("Kosmos-2", device="cpu")
        yield process, url, keyed
    finally:
        stop(process)


def snapshot(roots: list[Path], skip: list[Path]) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``roots``, except under ``skip``."""
    files = {}
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if Path(folder, d) not in skip and d not in (".git", ".venv", "__pycache__")]
            for name in names:
                path = Path(folder, name)
                if path not in skip:
                    stat = path.lstat()
                    files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


def git_ignored(paths: set[str]) -> set[str]:
    """Those of ``paths`` that git ignores in this repository: the outputs of the suite's other
    tests, written beside this one (the docs examples' ``samples/``, ``.cache/``, ...)."""
    repo = Path(__file__).resolve().parents[2]
    inside = sorted(path for path in paths if Path(path).is_relative_to(repo))
    result = subprocess.run(
        ["git", "check-ignore", "--stdin"], cwd=repo, input="\n".join(inside), capture_output=True, text=True
    )
    return set(result.stdout.split())


def files_holding(marker: bytes, roots: list[Path], since_ns: int = 0) -> list[str]:
    """Files under ``roots`` that hold ``marker``, among those written at or after ``since_ns``
    (a file the server wrote during the test is newer; older ones are not read)."""
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                try:
                    fresh = path.lstat().st_mtime_ns >= since_ns
                    if fresh and path.is_file() and marker in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    pass
    return found


def wait_until_finished(url: str, uuid_: str, headers=None) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = requests.post(
            f"{url}/get_inference_progress", headers=headers, json={"state": {"inference_request_uuid": uuid_}}
        ).json()
        if progress["finished"]:
            return progress
        time.sleep(0.1)
    raise TimeoutError(uuid_)


UPLOAD_ROUTES = [
    "/inference_image",
    "/inference_batch",
    "/inference_batch_async",
    "/smart_cache_files",
    "/inference_video_async",
]


def hostile_names(sentinel: Path) -> list[bytes]:
    return [
        str(sentinel / "victim.png").encode(),
        str(sentinel / "new.py").encode(),
        b"../../../escape.png",
        b"..\\..\\..\\escape.png",
        b"%2e%2e%2f%2e%2e%2fescape.png",
        b"a\x00b.png",
        b"x" * 4096 + b".png",
        "ünïcødé/../../ü.png".encode(),
        b"...",
        b"..",
        b"",
    ]


def test_upload_names_never_become_paths_and_nothing_stays_on_disk(open_server, tmp_path_factory):
    process, url, tmp = open_server
    sentinel = tmp_path_factory.mktemp("sentinel")
    (sentinel / "victim.png").write_bytes(b"the victim's own bytes")
    own = [tmp / "app_data", tmp / "cache", tmp / "server_tmp", tmp / "server.log"]
    roots = [tmp_path_factory.getbasetemp(), Path(__file__).resolve().parents[2]]
    clip = moving_square_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=3).read_bytes()
    started_ns = time.time_ns() - 2_000_000_000  # a margin for the file system's clock
    before = snapshot(roots, own)
    image = marked_png(scene(*SCENE_CASES[1])[0])
    statuses, uuids = {}, []
    for route in UPLOAD_ROUTES:
        for name in hostile_names(sentinel):
            body, content_type = multipart([(name, image)], {"settings": json.dumps({"settings": SETTINGS})})
            response = requests.post(f"{url}{route}", data=body, headers={"Content-Type": content_type})
            statuses.setdefault(route, set()).add(response.status_code)
            if route == "/inference_batch_async" and response.status_code == 200:
                uuids.append(response.json()["inference_request_uuid"])
    for name in hostile_names(sentinel):  # a real video under each name: served, stored under a name of the server's
        body, content_type = multipart([(name, clip)], {"settings": json.dumps({"settings": SETTINGS})})
        response = requests.post(f"{url}/inference_video_async", data=body, headers={"Content-Type": content_type})
        statuses.setdefault("video", set()).add(response.status_code)
        uuids.append(response.json().get("inference_request_uuid"))
    for uuid_ in uuids:
        assert wait_until_finished(url, uuid_)["exception"] is None
    assert statuses == {
        "/inference_image": {200},
        "/inference_batch": {200},
        "/inference_batch_async": {200},
        "/smart_cache_files": {400},
        "/inference_video_async": {400},  # a PNG sent as a video
        "video": {200},
    }
    assert not [path for path in (tmp / "server_tmp").rglob("*") if path.is_file()], "a video left on disk"
    after = snapshot(roots, own)
    changed = {path for path in set(after) | set(before) if after.get(path) != before.get(path)}
    assert changed - git_ignored(changed) == set()  # nothing written, overwritten or deleted
    assert (sentinel / "victim.png").read_bytes() == b"the victim's own bytes"
    searched = [*own[:3], sentinel, tmp_path_factory.getbasetemp(), Path("/tmp")]
    assert files_holding(MARKER.encode(), searched, since_ns=started_ns) == []
    assert process.poll() is None


def test_the_same_file_name_from_concurrent_clients_gets_each_its_own_answer(open_server, tmp_path):
    """Two different images, both called same.png, over /inference_image, /inference_batch and
    ModelAPI.predict (/inference_batch_async) from 8 threads: each answer is its image's."""
    _, url, _ = open_server
    images = {name: marked_png(scene(*case)[0]) for name, case in (("a", SCENE_CASES[1]), ("b", SCENE_CASES[3]))}
    alone = {}
    for name, data in images.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "same.png").write_bytes(data)
        response = requests.post(
            f"{url}/inference_image",
            files={"files": ("same.png", data, "image/png")},
            data={"settings": json.dumps({"settings": SETTINGS})},
        )
        alone[name] = canonical(response.json()["annotation"])
    assert alone["a"] != alone["b"]

    def one(seed: int) -> list[tuple[str, str]]:
        rng = random.Random(seed)
        route = rng.choice(["image", "batch", "model_api"])
        names = rng.sample(["a", "b"], 2) if route == "batch" else [rng.choice("ab")]
        if route == "model_api":
            [prediction] = ModelAPI(url=url).predict(input=str(tmp_path / names[0] / "same.png"), **SETTINGS)
            return [(names[0], canonical(prediction.annotation.to_json()))]
        files = [("files", ("same.png", images[name], "image/png")) for name in names]
        response = requests.post(
            f"{url}/inference_{route}", files=files, data={"settings": json.dumps({"settings": SETTINGS})}, timeout=120
        )
        assert response.status_code == 200, response.text
        results = response.json() if route == "batch" else [response.json()]
        return [(name, canonical(result["annotation"])) for name, result in zip(names, results)]

    with ThreadPoolExecutor(8) as pool:
        answers = [pair for pairs in pool.map(one, range(64)) for pair in pairs]
    wrong = [name for name, annotation in answers if annotation != alone[name]]
    assert len(answers) >= 64 and wrong == []


def test_no_request_reaches_an_address_the_operator_did_not_allow(open_server, recorder):
    _, url, _ = open_server
    port, seen = recorder
    seen.clear()
    here = f"http://127.0.0.1:{port}"
    for image_url in (f"{here}/img.png", f"http://localhost:{port}/img.png", f"http://[::1]:{port}/img.png"):
        response = requests.post(f"{url}/inference_image_url", json={"state": {"image_url": image_url}})
        assert response.status_code == 400 and "is not a public address" in response.json()["message"]
    foreign = {"server_address": here, "api_token": CLIENT_TOKEN}
    attempts = [
        ("/get_session_info", {**foreign, "state": {}}),
        ("/inference_image_id", {**foreign, "state": {"image_id": 1}}),
        ("/describe_regions", {**foreign, "state": {"image_id": 1}}),
        ("/smart_cache", {"state": {**foreign, "image_ids": [1]}}),
        (
            "/deploy_from_api",
            {
                "state": {
                    "model_name": "Kosmos-2",
                    "deploy_params": {"model_files": {"checkpoint": f"{here}/weights.bin"}},
                }
            },
        ),
    ]
    for route, body in attempts:
        response = requests.post(f"{url}{route}", json=body)
        assert response.status_code == 400, (route, response.text)
    time.sleep(0.5)
    assert seen == []
    assert requests.get(f"{url}/is_ready").status_code == 200


def test_an_allowed_url_is_served_and_slow_urls_do_not_starve_inference(keyed_server, recorder):
    _, _, keyed = keyed_server
    port, seen = recorder
    seen.clear()
    fetched = requests.post(
        f"{keyed}/inference_image_url",
        json={"state": {"image_url": f"http://127.0.0.1:{port}/img.png", "settings": SETTINGS}},
    )
    assert fetched.status_code == 200, fetched.text
    uploaded = requests.post(
        f"{keyed}/inference_image",
        files={"files": ("x.png", Recorder.image, "image/png")},
        data={"settings": json.dumps({"settings": SETTINGS})},
    )
    assert canonical(fetched.json()["annotation"]) == canonical(uploaded.json()["annotation"])
    assert seen == [("GET", "/img.png")]
    hop = requests.post(
        f"{keyed}/inference_image_url", json={"state": {"image_url": f"http://127.0.0.1:{port}/to-other-loopback"}}
    )
    assert hop.status_code == 400 and "'127.0.0.2'" in hop.json()["message"]  # the redirect is checked too
    started = time.monotonic()
    slow = requests.post(
        f"{keyed}/inference_image_url", json={"state": {"image_url": f"http://127.0.0.1:{port}/sleep"}}
    )
    assert slow.status_code == 400 and "did not send the image within 2 s" in slow.json()["message"]
    assert time.monotonic() - started < 6

    def sleepy(_):
        return requests.post(
            f"{keyed}/inference_image_url", timeout=60, json={"state": {"image_url": f"http://127.0.0.1:{port}/sleep"}}
        ).status_code

    with ThreadPoolExecutor(40) as pool:
        in_flight = pool.map(sleepy, range(40))
        time.sleep(0.5)
        started = time.monotonic()
        normal = requests.post(
            f"{keyed}/inference_image",
            files={"files": ("x.png", Recorder.image, "image/png")},
            data={"settings": json.dumps({"settings": SETTINGS})},
        )
        took = time.monotonic() - started
        codes = list(in_flight)
    assert normal.status_code == 200 and took < 2, took
    assert set(codes) <= {400, 503} and codes.count(400) >= 4


BAD_DEPLOYS = [
    ({"model_name": "Kosmos-9", "deploy_params": {"device": "cpu"}}, "model_name"),
    ({"model_name": "Kosmos-2", "deploy_params": {"device": "cuda:7"}}, "device"),
    ({"model_name": "Kosmos-2", "deploy_params": {"model_files": {"checkpoint": "/etc"}}}, "model_files"),
    ({"model_name": "Kosmos-2", "deploy_params": {"model_source": "Hub models"}}, "model_source"),
    ({"model_name": "Kosmos-2", "deploy_params": {"model_source": "Custom models"}}, "model_files.checkpoint"),
    (None, "deploy_params"),
]


def _still_serving(url: str, info_before: dict, headers=None) -> None:
    assert requests.get(f"{url}/is_ready").status_code == 200
    assert requests.post(f"{url}/get_deploy_info", json={}, headers=headers).json() == info_before
    response = requests.post(
        f"{url}/inference_image",
        headers=headers,
        data={"settings": "{}"},
        files={"files": ("x.png", Recorder.image or marked_png(scene(*SCENE_CASES[0])[0]))},
    )
    assert response.status_code == 200 and response.json()["annotation"]["objects"]


def test_without_a_key_control_routes_refuse_what_a_stranger_asks_and_serving_goes_on(open_server):
    process, url, _ = open_server
    info = requests.post(f"{url}/get_deploy_info", json={}).json()
    assert requests.post(f"{url}/sly/shutdown").status_code == 403
    assert requests.post(f"{url}/debug").status_code == 404
    for state, field in BAD_DEPLOYS:
        response = requests.post(f"{url}/deploy_from_api", json={"state": state})
        assert response.status_code == 400 and field in response.json()["message"], response.text
    _still_serving(url, info)
    assert process.poll() is None


def test_with_a_key_every_route_but_health_needs_it_and_serving_goes_on(keyed_server):
    process, url, keyed = keyed_server
    auth = {"Authorization": f"Bearer {KEY}"}
    info = requests.post(f"{url}/get_deploy_info", json={}, headers=auth).json()
    assert requests.get(f"{url}/is_ready").status_code == 200 and requests.get(f"{url}/is_alive").status_code == 200
    for route in ("/sly/shutdown", "/deploy_from_api", "/inference_image", "/get_session_info", "/sly/state", "/"):
        assert requests.post(f"{url}{route}", json={}).status_code == 401, route
    assert requests.post(f"{url}/debug").status_code == 404 and requests.post(f"{keyed}/debug").status_code == 404
    with pytest.raises(requests.HTTPError):
        ModelAPI(url=url).get_info()
    for state, field in BAD_DEPLOYS:
        assert requests.post(f"{url}/deploy_from_api", json={"state": state}).status_code == 401
        response = requests.post(f"{keyed}/deploy_from_api", json={"state": state})
        assert response.status_code == 400 and field in response.json()["message"], response.text
    _still_serving(url, info, auth)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kosmos2-{uuid.uuid4().hex}.png"
    path.write_bytes(Recorder.image)
    try:
        [prediction] = ModelAPI(url=keyed).predict(input=str(path), **SETTINGS)  # the key in the URL
        api = sly.Api("http://127.0.0.1:9", "local-placeholder-token", ignore_task_id=True)
        annotation = sly.nn.inference.Session(api, session_url=keyed).inference_image_path(str(path))
    finally:
        path.unlink()
    assert prediction.annotation.labels and annotation.labels
    assert process.poll() is None


MALFORMED = [
    ("/deploy_from_api", {"json": [1, 2]}),
    ("/deploy_from_api", {"json": "x"}),
    ("/deploy_from_api", {"json": {"state": None}}),
    ("/deploy_from_api", {"json": {}}),
    ("/deploy_from_api", {"data": b'{"state": {}}'}),
    ("/deploy_from_api", {"data": b""}),
    ("/inference_image_url", {"json": {"state": {"image_url": 5}}}),
    ("/inference_image_url", {"json": {}}),
    ("/inference_image_url", {"json": {"state": {"image_url": "http://x/", "settings": "abc"}}}),
    ("/visual_question_answering", {"json": {"state": None}}),
    ("/visual_question_answering", {"json": [1]}),
    ("/describe_regions", {"json": {"state": {"image_base64": "not base64!"}}}),
    ("/get_inference_progress", {"json": {"state": None}}),
    ("/get_inference_progress", {"json": ["x"]}),
    ("/get_inference_progress", {"json": {"state": {"inference_request_uuid": "nope"}}}),
    ("/pop_inference_results", {"json": {"state": {"inference_request_uuid": "nope"}}}),
    ("/inference_image", {"form": {"settings": '{"settings": "abc"}'}}),
    ("/inference_image", {"form": {"settings": "[1]"}}),
    ("/inference_image", {"form": {"settings": "not json"}}),
    ("/inference_image", {"form": {"state": '"x"'}}),
    ("/inference_image", {"form": {}, "no_file": True}),
    ("/inference_batch", {"form": {"settings": '{"settings": [1]}'}}),
    ("/inference_batch", {"form": {"state": '{"batch_size": 100000}'}}),
    ("/inference_batch", {"form": {"state": '{"batch_size": "many"}'}}),
    ("/inference_batch_async", {"form": {"settings": '{"settings": 5}'}}),
]


@pytest.mark.parametrize("route,request_", MALFORMED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(MALFORMED)])
def test_malformed_json_and_forms_are_400s_and_the_next_request_is_served(open_server, route, request_):
    _, url, _ = open_server
    if "form" in request_:
        files = None if request_.get("no_file") else {"files": ("x.png", Recorder.image or b"x", "image/png")}
        response = requests.post(f"{url}{route}", data=request_["form"], files=files)
    elif "json" in request_:
        response = requests.post(f"{url}{route}", json=request_["json"])
    else:
        response = requests.post(f"{url}{route}", data=request_["data"])  # no content type
    assert response.status_code in (400, 404), response.text
    assert response.json()["message"]
    assert requests.post(f"{url}/get_session_info", json={}).status_code == 200


def test_logs_hold_no_token_no_url_password_and_no_whole_body(open_server, monkeypatch, tmp_path):
    _, url, tmp = open_server
    monkeypatch.setenv("API_TOKEN", CLIENT_TOKEN)  # the SDK's clients send it as api_token
    (tmp_path / "a.png").write_bytes(marked_png(np.zeros((32, 32, 3), np.uint8)))
    [prediction] = ModelAPI(url=url).predict(input=str(tmp_path / "a.png"), max_new_tokens=4)
    assert prediction.annotation is not None
    in_form = json.dumps({"settings": {"max_new_tokens": 4}, "api_token": CLIENT_TOKEN})
    response = requests.post(
        f"{url}/inference_image",
        data={"settings": in_form},
        files={"files": ("a.png", (tmp_path / "a.png").read_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.text
    body = {
        "state": {
            "settings": {"max_new_tokens": 4},
            "api_token": CLIENT_TOKEN,
            "inference_request_uuid": "no-such-request",
            "image_url": "https://alice:hunter2-password@example.com/a.png",
            "blob": "Z" * 5_000_000,
        },
        "api_token": CLIENT_TOKEN,
        "context": {"apiToken": CLIENT_TOKEN},
    }
    assert requests.post(f"{url}/get_inference_progress", json=body).status_code == 404
    time.sleep(0.5)
    text = (tmp / "server.log").read_text()
    assert "Received a request to '/get_inference_progress'" in text  # debug logging is on
    assert SERVER_TOKEN not in text and CLIENT_TOKEN not in text and "hunter2" not in text
    assert "https://***@example.com/a.png" in text
    assert max(len(line) for line in text.splitlines()) < 20_000 and "ZZZZZ" * 1000 not in text


def test_the_key_stops_the_server_through_sly_shutdown(keyed_server):
    """Last, since it ends the keyed server: /sly/shutdown with the key is what an operator uses."""
    process, url, keyed = keyed_server
    assert requests.post(f"{url}/sly/shutdown").status_code == 401 and process.poll() is None
    with contextlib.suppress(requests.ConnectionError):  # it may close the connection as it stops
        requests.post(f"{keyed}/sly/shutdown", timeout=10)
    process.wait(timeout=30)
    assert process.returncode is not None
