"""The OpenVINO variants as users deploy them, in process: model-table rows through
``/deploy_from_api``, ``KOSMOS2_BACKEND``, concurrent requests, and the errors of a wrong device or
backend (the real server and the CLI: ``tests/e2e/test_openvino_e2e.py``). The tiny checkpoint is
copied first, so that its IR is written beside the copy."""

from __future__ import annotations

import pytest

from kosmos2_app import Kosmos2
from tests.support.app_harness import app_environment, client_for, infer_image, rectangles
from tests.support.helpers import SCENE_CASES, scene, tlbr_iou

OPENVINO_INT8 = "Kosmos-2 OpenVINO int8"


@pytest.fixture(scope="module")
def checkpoint_copy(openvino_checkpoint) -> str:
    """The tiny checkpoint with its int8 and fp32 IR beside it (exported once per session)."""
    return openvino_checkpoint


def _deploy(client, model_name: str, device: str = "cpu"):
    return client.post(
        "/deploy_from_api",
        json={
            "state": {
                "deploy_params": {"model_source": "Pretrained models", "device": device},
                "model_name": model_name,
            }
        },
    )


@pytest.mark.slow  # exports the int4 IR
def test_each_openvino_row_deploys_and_serves(tmp_path, checkpoint_copy):
    image, drawn = scene(*SCENE_CASES[1])
    with app_environment(tmp_path, checkpoint_copy):
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        for name, precision in (
            ("Kosmos-2 OpenVINO fp32", "FP32"),
            (OPENVINO_INT8, "INT8"),
            ("Kosmos-2 OpenVINO int4", "INT8"),
        ):
            assert _deploy(client, name).status_code == 200
            info = client.post("/get_deploy_info", json={}).json()
            assert info["model_precision"] == precision and info["device"] == "cpu"
            assert client.post("/get_session_info", json={}).json()["backend"] == "openvino-" + name.split()[-1]
            [rect] = rectangles(infer_image(client, image).json()["annotation"])
            assert rect["class"] == drawn.phrase and tlbr_iou(rect["tlbr"], drawn) >= 0.5


def test_an_openvino_row_on_a_gpu_or_a_bad_backend_is_a_400_and_serving_goes_on(tmp_path, checkpoint_copy):
    with app_environment(tmp_path, checkpoint_copy) as environment:
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        refused = _deploy(client, OPENVINO_INT8, device="cuda")
        assert refused.status_code == 400 and "run on CPU" in refused.json()["message"], refused.text
        environment.setenv("KOSMOS2_BACKEND", "tensorrt")
        refused = _deploy(client, "Kosmos-2")
        assert refused.status_code == 400 and "KOSMOS2_BACKEND" in refused.json()["message"]
        environment.setenv("KOSMOS2_BACKEND", "openvino-int8")  # a local run's override of the row
        assert _deploy(client, "Kosmos-2").status_code == 200
        assert client.post("/get_session_info", json={}).json()["backend"] == "openvino-int8"
        assert infer_image(client, scene(*SCENE_CASES[0])[0]).status_code == 200


def test_concurrent_requests_on_the_int8_row_share_runs_and_answer_as_alone(tmp_path, checkpoint_copy):
    from concurrent.futures import ThreadPoolExecutor

    images = [scene(*case)[0] for case in SCENE_CASES]
    settings = [{}, {"task": "phrase_grounding", "phrases": "circle. square"}]
    with app_environment(tmp_path, checkpoint_copy):
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        assert _deploy(client, OPENVINO_INT8).status_code == 200
        jobs = [(image, settings[i % 2]) for i, image in enumerate(images)] * 2
        alone = [infer_image(client, image, **s).json()["annotation"] for image, s in jobs]
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(lambda job: infer_image(client, job[0], **job[1]), jobs))
        assert [r.status_code for r in together] == [200] * len(jobs)
        for response, expected in zip(together, alone):  # batch composition may move the last digits
            got, want = rectangles(response.json()["annotation"]), rectangles(expected)
            assert [(r["class"], r["tlbr"]) for r in got] == [(r["class"], r["tlbr"]) for r in want]
            assert [r["confidence"][0] for r in got] == pytest.approx([r["confidence"][0] for r in want], abs=1e-3)
        assert model._batcher.joint_runs > 0


def test_masks_on_an_openvino_row_encode_with_sam2s_openvino_ir(tmp_path, checkpoint_copy):
    """The int8 row with ``masks: true``: SAM 2's image encoder runs as OpenVINO IR (exported
    beside a copy of the tiny SAM 2), the session says so, and the square comes back a Bitmap."""
    import shutil

    from tests.support.app_harness import TINY_SAM2

    sam2 = tmp_path / "sam2"
    shutil.copytree(TINY_SAM2, sam2)
    image, drawn = scene(*SCENE_CASES[1])
    with app_environment(tmp_path, checkpoint_copy) as environment:
        environment.setenv("KOSMOS2_SAM2", str(sam2))
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        assert _deploy(client, OPENVINO_INT8).status_code == 200
        assert client.post("/get_session_info", json={}).json()["sam2_image_encoder"] == "openvino-fp32"
        annotation = infer_image(client, image, masks=True).json()["annotation"]
        assert [o["geometryType"] for o in annotation["objects"]] == ["bitmap"]
        assert (sam2 / "openvino-sam2-fp32" / "image_encoder.xml").is_file()  # exported by this deploy's first mask
