"""The OpenVINO int8 row on the real server through ``ModelAPI`` and ``Session``, and through the
CLI's ``--model``."""

from __future__ import annotations

import json

import requests
from supervisely.nn.model.model_api import ModelAPI

from tests.e2e.test_e2e import scene_files, session  # noqa: F401 - fixture and client helper
from tests.support.app_harness import rectangles
from tests.support.helpers import tlbr_iou
from tests.support.server_process import app_env, cli_predict, free_port, server_command, start, stop

OPENVINO_INT8 = "Kosmos-2 OpenVINO int8"


def test_model_api_deploys_the_int8_row_on_the_real_server(tmp_path, openvino_checkpoint, scene_files):  # noqa: F811
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(server_command(port), app_env(tmp_path, openvino_checkpoint), tmp_path / "server.log", url)
    try:
        ModelAPI(url=url).load(OPENVINO_INT8, device="cpu")
        client = session(url)
        for path, drawn in scene_files:
            [label] = client.inference_image_path(str(path)).labels
            assert label.obj_class.name == drawn.phrase
        [prediction] = ModelAPI(url=url).predict(
            input=str(scene_files[0][0]), task="phrase_grounding", phrases="circle"
        )
        assert [label.obj_class.name for label in prediction.annotation.labels] == ["circle"]
        assert requests.post(f"{url}/get_session_info", json={}).json()["backend"] == "openvino-int8"
    finally:
        stop(process)


def test_cli_predict_with_the_int8_row(tmp_path, openvino_checkpoint, scene_files):  # noqa: F811
    folder = scene_files[0][0].parent
    result = cli_predict(folder, tmp_path / "out", app_env(tmp_path, openvino_checkpoint), "--model", OPENVINO_INT8)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for path, drawn in scene_files:
        [rect] = rectangles(json.loads((tmp_path / "out" / folder.name / f"{path.name}.json").read_text()))
        assert rect["class"] == drawn.phrase and tlbr_iou(rect["tlbr"], drawn) >= 0.5
