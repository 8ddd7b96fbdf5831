"""Faults while serving: the SDK's idle freeze (weights moved to CPU and back) under load, and
a cancelled asynchronous project inference. Out-of-memory splitting is in test_decoder.py,
missing checkpoints and early requests in test_app.py / conftest.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kosmos2_app import Kosmos2
from kosmos2_engine import GenerationPolicy, Kosmos2Engine
from tests.support.app_harness import app_environment, client_for, infer_image
from tests.support.fake_supervisely import FakeProject
from tests.support.helpers import SCENE_CASES, scene


def test_moving_the_engine_waits_for_the_run_in_progress(tiny_checkpoint):
    """``to`` (what the idle freeze calls) must not move weights under a running batch."""
    engine = Kosmos2Engine.load(tiny_checkpoint, device="cpu")
    image = scene(*SCENE_CASES[0])[0]
    policy = GenerationPolicy(max_new_tokens=8)
    expected = engine.run([image], policy)
    events: list[str] = []
    encode = engine.encode_pixels

    def encode_then_pause(pixels):  # the gap between the vision pass and decoding
        embeds = encode(pixels)
        events.append("encoded")
        time.sleep(0.3)
        return embeds

    engine.encode_pixels = encode_then_pause
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: (engine.run([image], policy), events.append("run finished"))[0])
        while not events:
            time.sleep(0.01)
        engine.to("cpu")
        events.append("moved")
        assert running.result() == expected
    assert events == ["encoded", "run finished", "moved"]
    assert engine.run([image], policy) == expected  # the rebuilt decoder answers the same


@pytest.mark.parametrize("device", ["cpu:0", "cuda:x", "gpu", ""])
def test_devices_are_what_torch_calls_cpu_or_cuda(tiny_checkpoint, device):
    if device == "cpu:0":
        assert Kosmos2Engine.load(tiny_checkpoint, device=device).device == "cpu:0"
    else:
        with pytest.raises((ValueError, RuntimeError), match="cpu"):
            Kosmos2Engine.load(tiny_checkpoint, device=device)


@pytest.fixture(scope="module")
def served_on_cpu0(tmp_path_factory, tiny_checkpoint):
    """The app deployed on ``cpu:0``: the SDK freezes any device but ``"cpu"`` to ``"cpu"``, so
    this runs the real freeze (load_model on "cpu") and wake-up (load_model on "cpu:0")."""
    with app_environment(tmp_path_factory.mktemp("app"), tiny_checkpoint):
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        response = client.post(
            "/deploy_from_api",
            json={
                "state": {
                    "deploy_params": {"model_source": "Pretrained models", "device": "cpu:0"},
                    "model_name": "Kosmos-2",
                }
            },
        )
        assert response.status_code == 200, response.text
        yield model, client


def _annotations(client, images) -> list[dict]:
    with ThreadPoolExecutor(len(images)) as pool:
        responses = list(pool.map(lambda image: infer_image(client, image, max_new_tokens=16), images))
    assert [r.status_code for r in responses] == [200] * len(images), [r.text for r in responses]
    return [r.json()["annotation"] for r in responses]


def test_idle_freeze_and_wake_up_under_load_keep_every_answer(served_on_cpu0):
    model, client = served_on_cpu0
    images = [scene(*case)[0] for case in SCENE_CASES[:3]] * 2
    expected = [infer_image(client, image, max_new_tokens=16).json()["annotation"] for image in images]

    froze = {}
    freezer = threading.Thread(target=lambda: froze.update(client.post("/freeze_model").json()))
    with ThreadPoolExecutor(1) as pool:
        during_freeze = pool.submit(_annotations, client, images)
        time.sleep(0.05)
        freezer.start()
        freezer.join()
        assert during_freeze.result() == expected
    assert froze == {"message": "Model is frozen."}
    assert model._model_frozen and model._engine.device == "cpu"

    assert _annotations(client, images) == expected  # the first of these wakes the model up
    assert not model._model_frozen and model._engine.device == "cpu:0"
    assert model._batcher._queue == []


def _request_threads(model, before: set) -> list[str]:
    """Threads started since ``before`` that belong to a request: not an idle worker of the
    SDK's inference pool or of the engine's image pool (started by the first run of several
    images in the process), tqdm's monitor, or the SDK's idle-freeze timer (those outlive requests)."""
    pool = set(model._executor._threads)
    return [
        thread.name
        for thread in set(threading.enumerate()) - before
        if thread not in pool
        and thread.name != "tqdm_monitor"
        and not thread.name.startswith("kosmos2-images")
        and not isinstance(thread, threading.Timer)
    ]


def _progress(client, uuid: str) -> dict:
    return client.post("/get_inference_progress", json={"state": {"inference_request_uuid": uuid}}).json()


def test_a_cancelled_project_inference_stops_and_frees_what_it_held(served_on_cpu0, monkeypatch):
    model, client = served_on_cpu0
    images = [scene(seed, 64, 48)[0] for seed in range(40)]
    monkeypatch.setattr(model, "api_from_request", lambda request: FakeProject(images))
    threads_before = set(threading.enumerate())
    started = client.post(
        "/inference_project_id_async",
        json={"state": {"projectId": 1, "batch_size": 2, "settings": {"max_new_tokens": 24}}},
    )
    assert started.status_code == 200, started.text
    uuid = started.json()["inference_request_uuid"]
    deadline = time.monotonic() + 60
    while _progress(client, uuid)["progress"]["current"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.post("/stop_inference", json={"state": {"inference_request_uuid": uuid}}).json()["success"]
    while _progress(client, uuid)["is_inferring"] and time.monotonic() < deadline:
        time.sleep(0.05)
    progress = _progress(client, uuid)
    assert progress["stage"] == "Cancelled" and progress["stopped"] and not progress["is_inferring"]
    popped = client.post("/pop_inference_results", json={"state": {"inference_request_uuid": uuid}}).json()
    done = popped["pending_results"]
    assert 2 <= len(done) < len(images) and all("annotation" in result for result in done)
    assert model._batcher._queue == []
    while _request_threads(model, threads_before) and time.monotonic() < deadline:
        time.sleep(0.05)  # the SDK's downloader and uploader threads end with the request
    assert _request_threads(model, threads_before) == []
    client.post("/clear_inference_request", json={"state": {"inference_request_uuid": uuid}})
    assert infer_image(client, images[0], max_new_tokens=8).status_code == 200
