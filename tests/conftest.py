"""Shared fixtures: the tiny trained checkpoint, an engine on it, and the app deployed on it."""

from __future__ import annotations

import shutil

import pytest

from kosmos2_app import Kosmos2
from kosmos2_engine import Kosmos2Engine
from tests.app_harness import app_environment, client_for, deploy_on_cpu, infer_image
from tests.helpers import SCENE_CASES, scene
from tests.server_process import app_env, free_port, server_command, start, stop
from tests.tiny_model.build import ensure_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint() -> str:
    """Folder of the tiny trained Kosmos-2 (built on first use, then cached)."""
    return str(ensure_tiny_checkpoint())


@pytest.fixture(scope="session")
def openvino_checkpoint(tmp_path_factory, tiny_checkpoint) -> str:
    """A copy of the tiny checkpoint with its int8 and fp32 OpenVINO IR exported beside it,
    once per test session (each export takes seconds)."""
    from kosmos2_engine.runtime.openvino.export import export_openvino

    folder = tmp_path_factory.mktemp("openvino") / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    for weights in ("int8", "fp32"):
        export_openvino(str(folder), weights, progress=lambda line: None)
    return str(folder)


@pytest.fixture(scope="session")
def engine(tiny_checkpoint) -> Kosmos2Engine:
    return Kosmos2Engine.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    """A GUI-template app, deployed through /deploy_from_api as the model table's Serve does."""
    with app_environment(tmp_path_factory.mktemp("app"), tiny_checkpoint):
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        assert client.get("/is_ready").status_code == 503
        early = infer_image(client, scene(*SCENE_CASES[0])[0])
        assert early.status_code == 503 and "not deployed" in early.json()["message"]
        response = deploy_on_cpu(client)
        assert response.status_code == 200, response.text
        yield model, client


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, tiny_checkpoint):
    """`uvicorn main:model.app --app-dir src` (what `make serve` runs) on 127.0.0.1, deployed with
    ModelAPI.load on the tiny model; its URL. Images up to 1 000 000 pixels."""
    import requests
    from supervisely.nn.model.model_api import ModelAPI

    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**app_env(tmp, tiny_checkpoint), "KOSMOS2_MAX_IMAGE_PIXELS": "1000000"}
    process = start(server_command(port), env, tmp / "server.log", url)
    try:
        assert requests.get(f"{url}/is_ready", timeout=5).status_code == 503
        ModelAPI(url=url).load("Kosmos-2", device="cpu")
        yield url
    finally:
        stop(process)
