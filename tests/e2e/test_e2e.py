"""End to end: the real server started as the README starts it, on 127.0.0.1, called with the
SDK's own clients; and the SDK CLI (``predict`` and ``deploy``) in subprocesses."""

from __future__ import annotations

import base64
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import supervisely as sly
from PIL import Image
from supervisely.nn.model.model_api import ModelAPI

from kosmos2_app.results.predictions import class_colour
from tests.support.app_harness import label_tlbr, rectangles
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, tlbr_iou, two_shapes
from tests.support.server_process import app_env, cli_predict, free_port, start, stop

MAX_PIXELS = 1_000_000  # live_server's KOSMOS2_MAX_IMAGE_PIXELS (tests/conftest.py): above every test scene


def write_pngs(folder: Path, cases, draw) -> list:
    """Each case drawn by ``draw(*case)`` into ``folder`` as PNG: [(path, what was drawn)]."""
    folder.mkdir()
    files = []
    for case in cases:
        image, drawn = draw(*case)
        path = folder / f"case_{case[0]}.png"
        Image.fromarray(image).save(path)
        files.append((path, drawn))
    return files


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    """The one-shape cases as PNG files: [(path, drawn shape)]."""
    return write_pngs(tmp_path_factory.mktemp("scenes") / "images", SCENE_CASES, scene)


@pytest.fixture(scope="module")
def two_shape_files(tmp_path_factory):
    """The two-shape cases as PNG files in one folder: [(path, (left shape, right shape))]."""
    return write_pngs(tmp_path_factory.mktemp("pairs") / "pairs", TWO_SHAPE_CASES, two_shapes)


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


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


@pytest.mark.parametrize("route", ["/inference_image", "/inference_batch"])
def test_an_image_over_the_pixel_limit_is_a_400_and_the_server_keeps_serving(server, scene_files, tmp_path, route):
    """A 1 MB PNG that decodes to 3000 x 3000 (9 Mpx, over the 1 Mpx limit): refused from its
    header, not decoded. Then an ordinary image is served."""
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (3000, 3000)).save(bomb)
    with bomb.open("rb") as image:
        response = requests.post(
            f"{server}{route}", files={"files": ("bomb.png", image, "image/png")}, data={"settings": "{}"}
        )
    assert response.status_code == 400, response.text
    assert f"more than {MAX_PIXELS} pixels" in response.json()["message"]
    path, _ = scene_files[0]
    assert len(session(server).inference_image_path(str(path)).labels) == 1


def test_bad_setting_is_a_400_and_the_server_keeps_serving(server, scene_files):
    path, _ = scene_files[0]
    with path.open("rb") as image:
        response = requests.post(
            f"{server}/inference_image",
            files={"files": image},
            data={"settings": json.dumps({"settings": {"max_new_tokens": -1}})},
        )
    assert response.status_code == 400 and "max_new_tokens" in response.json()["message"]
    assert len(session(server).inference_image_path(str(path)).labels) == 1


def test_cli_predict_writes_the_annotation_the_server_gives(server, scene_files, tiny_checkpoint, tmp_path):
    folder = scene_files[0][0].parent
    env = {**app_env(tmp_path, tiny_checkpoint), "KOSMOS2_MAX_BATCH": "2"}
    result = cli_predict(folder, tmp_path / "out", env, "--settings", "max_new_tokens=64", "--draw")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Kosmos-2: 100%" in result.stderr and f"{len(scene_files)}/{len(scene_files)}" in result.stderr  # progress
    client = session(server)
    for path, drawn in scene_files:
        written = json.loads((tmp_path / "out" / folder.name / f"{path.name}.json").read_text())
        [rect] = rectangles(written)
        assert rect["class"] == drawn.phrase and tlbr_iou(rect["tlbr"], drawn) >= 0.5
        assert rectangles(client.inference_image_path(str(path)).to_json()) == [rect]
        image = sly.image.read(str(path))
        picture = sly.image.read(str(tmp_path / "out" / folder.name / path.name))  # --draw: ours
        band = picture.shape[0] - image.shape[0]
        assert band > 0 and (picture[band:] == image).mean() > 0.5  # caption band over the image
        top, left, bottom, right = rect["tlbr"]
        assert picture[band + (top + bottom) // 2, left].tolist() == class_colour(rect["class"])  # the outline


def test_cli_deploy_serves_the_model_on_loopback_only(tiny_checkpoint, scene_files, tmp_path):
    """`python src/main.py deploy` listens on 127.0.0.1 (KOSMOS2_PORT), not on every interface:
    127.0.0.2 is this machine too, but a socket bound to 127.0.0.1 does not accept it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "src/main.py", "deploy", "--device", "cpu"]
    env = {**app_env(tmp_path, tiny_checkpoint), "KOSMOS2_PORT": str(port)}
    process = start(command, env, tmp_path / "deploy.log", url)
    try:
        assert requests.get(f"{url}/is_ready", timeout=5).status_code == 200
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.2", port)) != 0
        path, drawn = scene_files[2]
        [label] = session(url).inference_image_path(str(path)).labels
        assert label.obj_class.name == drawn.phrase and tlbr_iou(label_tlbr(label), drawn) >= 0.5
    finally:
        stop(process)
    assert f"Uvicorn running on http://127.0.0.1:{port}" in (tmp_path / "deploy.log").read_text()


def tag_values(tags) -> dict:
    return {tag.name: tag.value for tag in tags}


def test_session_runs_every_task(server, two_shape_files):
    path, (left, right) = two_shape_files[1]
    phrase = f"the {right.colour} {right.shape}"
    [label] = session(server, task="phrase_grounding", phrases=[phrase]).inference_image_path(str(path)).labels
    assert label.obj_class.name == phrase and tlbr_iou(label_tlbr(label), right) >= 0.5
    [label] = (
        session(server, task="referring_expression", expression="the shape on the left")
        .inference_image_path(str(path))
        .labels
    )
    assert label.obj_class.name == "the shape on the left" and tlbr_iou(label_tlbr(label), left) >= 0.5
    regions = [list(left.pixel_ltrb), list(right.pixel_ltrb)]
    ann = session(server, task="region_description", regions=regions).inference_image_path(str(path))
    assert [tag_values(label.tags)["description"] for label in ann.labels] == [f"{left.phrase}.", f"{right.phrase}."]
    ann = session(server, task="detailed_caption").inference_image_path(str(path))
    assert tag_values(ann.img_tags)["caption"] == (
        f"There is {left.phrase} on the left and {right.phrase} on the right."
    )
    ann = session(server, task="custom", prompt="An image of").inference_image_path(str(path))
    assert tag_values(ann.img_tags)["caption"] == f"An image of {left.phrase} and {right.phrase} ."


def test_model_api_predict_takes_task_keywords(server, two_shape_files):
    model = ModelAPI(url=server)
    path, (left, right) = two_shape_files[1]
    [prediction] = model.predict(input=str(path), task="phrase_grounding", phrases=f"{left.shape}. {right.shape}")
    assert list(prediction.classes) == [left.shape, right.shape]
    assert tlbr_iou(tuple(int(v) for v in prediction.boxes[1]), right) >= 0.5
    [prediction] = model.predict(input=str(path), task="vqa", question=f"What colour is the {left.shape}?")
    assert tag_values(prediction.annotation.img_tags)["answer"] == f"The {left.shape} is {left.colour}."


def test_vqa_route_over_http(server, two_shape_files):
    path, (left, _) = two_shape_files[2]
    body = {
        "state": {
            "image_base64": base64.b64encode(path.read_bytes()).decode(),
            "question": f"What colour is the {left.shape}?",
        }
    }
    response = requests.post(f"{server}/visual_question_answering", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["answer"] == f"The {left.shape} is {left.colour}."


def test_a_bad_task_setting_is_a_400_through_the_session_and_the_server_keeps_serving(server, two_shape_files):
    path, _ = two_shape_files[0]
    with pytest.raises(requests.HTTPError) as error:
        session(server, task="vqa", question="what is </s>?").inference_image_path(str(path))
    assert error.value.response.status_code == 400 and "'question'" in error.value.response.text
    assert session(server).inference_image_path(str(path)).labels


def test_cli_predict_runs_a_task_from_settings(server, two_shape_files, tiny_checkpoint, tmp_path):
    folder = two_shape_files[0][0].parent
    path, (asked, _) = two_shape_files[1]
    question = f"question=What colour is the {asked.shape}?"
    result = cli_predict(
        folder, tmp_path / "out", app_env(tmp_path, tiny_checkpoint), "--settings", "task=vqa", question
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for other, _ in two_shape_files:  # one annotation per image, each with an answer
        written = json.loads((tmp_path / "out" / folder.name / f"{other.name}.json").read_text())
        assert [tag["name"] for tag in written["tags"]] == ["answer"]
    written = json.loads((tmp_path / "out" / folder.name / f"{path.name}.json").read_text())
    assert written["tags"][0]["value"] == f"The {asked.shape} is {asked.colour}."


def test_cli_predict_without_weights_says_why_in_one_line(two_shape_files, tmp_path):
    folder = two_shape_files[0][0].parent
    env = app_env(tmp_path, "/nonexistent/kosmos-2")
    result = cli_predict(folder, tmp_path / "out", env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Kosmos-2 could not be deployed")]
    assert "(HTTP 503)" in line and "KOSMOS2_CHECKPOINT" in line


def test_a_deployed_model_declares_classes_and_finds_the_ones_asked_for(server, tmp_path):
    """What the Predict App and other apps rely on, through the SDK's own clients: classes from
    the start, and ``classes`` answered with labels of those classes only."""
    from tests.tiny_model.samples import write_samples

    [_, shapes, _] = write_samples(tmp_path)  # the README's samples/shapes.png: a yellow square, a red triangle
    model = ModelAPI(url=server)
    assert model.get_classes()[:3] == ["person", "bicycle", "car"] and len(model.get_classes()) >= 80
    meta = session(server).get_model_meta()
    assert meta.get_obj_class("person").geometry_type == sly.Rectangle and meta.get_tag_meta("confidence")
    [prediction] = model.predict(input=str(shapes), classes=["triangle"])
    assert list(prediction.classes) == ["triangle"]
    top, left, bottom, right = prediction.boxes[0]
    assert left > 100  # the triangle is the right-hand shape of the 200 px wide image
    ann = session(server, classes=["square", "triangle"]).inference_image_path(str(shapes))
    assert sorted(label.obj_class.name for label in ann.labels) == ["square", "triangle"]
    assert "triangle" in model.get_classes()


def test_masks_cover_the_shapes_asked_for_as_bitmaps(server, tmp_path):
    """``masks=True`` through ``ModelAPI``: the square of samples/shapes.png as a Bitmap of class
    ``square`` (IoU >= 0.85 with the drawn square), with its confidence and the mask's quality;
    ``keep_boxes`` keeps the rectangle beside it; the meta lets the class hold both."""
    import random

    from tests.tiny_model.samples import write_samples
    from tests.tiny_model.scenes import draw_two_shapes

    [_, shapes, _] = write_samples(tmp_path)
    _, (square, _) = draw_two_shapes(random.Random(11), 200, 150, (("yellow", "square"), ("red", "triangle")))
    [prediction] = ModelAPI(url=server).predict(input=str(shapes), classes=["square"], masks=True)
    [label] = prediction.annotation.labels
    assert label.obj_class.name == "square" and isinstance(label.geometry, sly.Bitmap)
    left, top, right, bottom = square.pixel_ltrb
    truth = np.zeros((150, 200), bool)
    truth[top : bottom + 1, left : right + 1] = True
    drawn = np.zeros((150, 200), bool)
    label.geometry.draw(drawn, True)
    assert (drawn & truth).sum() / (drawn | truth).sum() >= 0.85
    assert label.tags.get("confidence").value > 0 and 0 <= label.tags.get("mask_quality").value <= 1
    [both] = ModelAPI(url=server).predict(input=str(shapes), classes=["square"], masks=True, keep_boxes=True)
    assert sorted(type(label.geometry).__name__ for label in both.annotation.labels) == ["Bitmap", "Rectangle"]
    assert ModelAPI(url=server).get_model_meta().get_obj_class("square").geometry_type == sly.AnyGeometry


def test_the_toolboxs_selected_box_is_described_and_searched_through_the_session(server, two_shape_files):
    """What NN Image Labeling sends with a box selected, through the SDK's ``Session``."""
    path, (_, square) = two_shape_files[3]  # a green triangle, a yellow square
    left, top, right, bottom = square.pixel_ltrb
    box = [top - 6, left - 6, bottom + 6, right + 6]
    settings = {"mode": "reference_image", "reference_bbox": box, "reference_image_id": 7, "classes": ["square"]}
    ann = session(server, **settings).inference_image_path(str(path))
    by_class = {label.obj_class.name: label for label in ann.labels}
    assert sorted(by_class) == ["region", "square"]
    assert label_tlbr(by_class["region"]) == tuple(box) and by_class["region"].tags.get("description").value
    assert tlbr_iou(label_tlbr(by_class["square"]), square) >= 0.5
