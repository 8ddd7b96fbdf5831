"""End to end: the real server started as the README starts it, on 127.0.0.1, called with the
SDK's own clients; and the SDK CLI (``predict`` and ``deploy``) in subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import supervisely as sly
from PIL import Image
from supervisely.nn.model.model_api import ModelAPI

from tests.app_harness import REPO, label_tlbr, read_env_file, rectangles
from tests.helpers import SCENE_CASES, scene, tlbr_iou

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(tmp_path: Path, checkpoint: str) -> dict[str, str]:
    """The process environment plus local.env, with data under ``tmp_path`` and the tiny model."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ENV", "TASK_ID", "DEBUG_WITH_SLY_NET", "AUTOSTART")}
    env.update(read_env_file(REPO / "local.env"))
    env.update(DEBUG_APP_DIR=str(tmp_path / "app_data"), SLY_APP_DATA_DIR=str(tmp_path / "app_data"),
               SMART_CACHE_CONTAINER_DIR=str(tmp_path / "cache"), KOSMOS2_CHECKPOINT=checkpoint,
               PYTHONPATH="src")
    return env


def wait_until_alive(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/is_alive", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server did not start:\n{log.read_text()[-3000:]}")


def start(command: list[str], env: dict, log: Path, url: str) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_until_alive(url, process, log)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    """The scene cases as PNG files: [(path, drawn shape)]."""
    folder = tmp_path_factory.mktemp("scenes") / "images"
    folder.mkdir()
    files = []
    for case in SCENE_CASES:
        image, drawn = scene(*case)
        path = folder / f"scene_{case[0]}.png"
        Image.fromarray(image).save(path)
        files.append((path, drawn))
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    """`uvicorn main:model.app --app-dir src` (what `make serve` runs), deployed with ModelAPI.load."""
    tmp = tmp_path_factory.mktemp("server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "uvicorn", "main:model.app", "--app-dir", "src", "--host",
               "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--ws", "websockets"]
    process = start(command, app_env(tmp, tiny_checkpoint), tmp / "server.log", url)
    try:
        assert requests.get(f"{url}/is_ready", timeout=5).status_code == 503
        ModelAPI(url=url).load("Kosmos-2", device="cpu")
        yield url
    finally:
        stop(process)


def session(url: str, **settings) -> sly.nn.inference.Session:
    # Session needs an Api object for its token; with session_url it is never contacted.
    api = sly.Api("http://127.0.0.1:9", "local-placeholder-token", ignore_task_id=True)
    return sly.nn.inference.Session(api, session_url=url, inference_settings=settings or None)


def test_session_inference_image_path_boxes_the_shape(server, scene_files):
    client = session(server)
    for path, drawn in scene_files:
        annotation = client.inference_image_path(str(path))
        [label] = annotation.labels
        assert label.obj_class.name == drawn.phrase
        assert isinstance(label.geometry, sly.Rectangle)
        assert tlbr_iou(label_tlbr(label), drawn) >= 0.5
        [confidence] = [tag.value for tag in label.tags if tag.name == "confidence"]
        assert 0 < confidence <= 1


def test_session_settings_are_honoured(server, scene_files):
    path, _ = scene_files[0]
    assert session(server, max_new_tokens=3).inference_image_path(str(path)).labels == []
    assert session(server, confidence_threshold=1.0).inference_image_path(str(path)).labels == []
    assert len(session(server, max_new_tokens=40).inference_image_path(str(path)).labels) == 1


def test_model_api_predict_and_deploy_info(server, scene_files):
    model = ModelAPI(url=server)
    info = model.get_info()
    assert info["device"] == "cpu" and info["model_name"] == "Kosmos-2"
    path, drawn = scene_files[1]
    [prediction] = model.predict(input=str(path), max_new_tokens=40)
    assert list(prediction.classes) == [drawn.phrase]
    assert tlbr_iou(tuple(int(v) for v in prediction.boxes[0]), drawn) >= 0.5
    assert 0 < prediction.scores[0] < 1  # a real confidence, not the SDK's default of 1


def test_bad_setting_is_a_400_and_the_server_keeps_serving(server, scene_files):
    path, _ = scene_files[0]
    with path.open("rb") as image:
        response = requests.post(f"{server}/inference_image", files={"files": image},
                                 data={"settings": json.dumps({"settings": {"max_new_tokens": -1}})})
    assert response.status_code == 400 and "max_new_tokens" in response.json()["message"]
    assert len(session(server).inference_image_path(str(path)).labels) == 1


def test_cli_predict_writes_the_annotation_the_server_gives(server, scene_files, tiny_checkpoint, tmp_path):
    folder = scene_files[0][0].parent
    result = subprocess.run(
        [sys.executable, "src/main.py", "predict", str(folder), "--device", "cpu", "--output",
         str(tmp_path / "out"), "--settings", "max_new_tokens=64"],
        cwd=REPO, env=app_env(tmp_path, tiny_checkpoint), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    client = session(server)
    for path, drawn in scene_files:
        written = json.loads((tmp_path / "out" / folder.name / f"{path.name}.json").read_text())
        [rect] = rectangles(written)
        assert rect["class"] == drawn.phrase and tlbr_iou(rect["tlbr"], drawn) >= 0.5
        assert rectangles(client.inference_image_path(str(path)).to_json()) == [rect]


def test_cli_deploy_serves_the_model(tiny_checkpoint, scene_files, tmp_path):
    """`python src/main.py deploy` binds the SDK's fixed port 8000."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("port 8000 is in use")
    url = "http://127.0.0.1:8000"
    command = [sys.executable, "src/main.py", "deploy", "--device", "cpu"]
    process = start(command, app_env(tmp_path, tiny_checkpoint), tmp_path / "deploy.log", url)
    try:
        assert requests.get(f"{url}/is_ready", timeout=5).status_code == 200
        path, drawn = scene_files[2]
        [label] = session(url).inference_image_path(str(path)).labels
        assert label.obj_class.name == drawn.phrase and tlbr_iou(label_tlbr(label), drawn) >= 0.5
    finally:
        stop(process)
