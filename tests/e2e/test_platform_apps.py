"""The platform's apps driving the real server, whose Supervisely instance is the stand-in API:

* a project of two-shape scenes predicted in the classes asked for, through ``ModelAPI`` and
  ``Session``'s asynchronous project inference (progress, stop, results);
* a fine-tuned checkpoint from Team Files: fetched once into the cache, served, named by
  ``/get_deploy_info``; a broken or hostile folder is a 400 naming the field and the model that
  served keeps serving. The tiny model stands for the fine-tuned one (same weights: the same
  answers)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import supervisely as sly
from PIL import Image
from supervisely.nn.model.model_api import ModelAPI

from tests.support.app_harness import REPO, rectangles
from tests.support.helpers import TWO_SHAPE_CASES, two_shapes
from tests.support.predict_app import REPORT

FIELD = "deploy_params.model_files.checkpoint"
PROJECT = 10  # the stand-in's project of four two-shape scenes, each a square and a triangle
SHAPES = ["square", "triangle"]


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


@pytest.fixture(scope="module")
def project(stand_in_api) -> int:
    """Project 10: datasets ``scenes`` (two images) and ``more`` (two), the scenes the tiny model
    reads right (``TWO_SHAPE_CASES[1:]``)."""
    images = []
    for index, case in enumerate(TWO_SHAPE_CASES[1:]):
        data = io.BytesIO()
        Image.fromarray(two_shapes(*case)[0]).save(data, format="PNG")
        images.append((100 + index, f"pair_{index}.png", data.getvalue()))
    stand_in_api.add_project(PROJECT, "shapes", {20: ("scenes", images[:2]), 21: ("more", images[2:])})
    return PROJECT


def _classes_and_confidences(ann: sly.Annotation) -> tuple[list[str], list[float]]:
    return sorted(label.obj_class.name for label in ann.labels), [
        label.tags.get("confidence").value for label in ann.labels
    ]


def test_model_api_predicts_a_project_in_the_classes_asked_for(server, project):
    predictions = ModelAPI(url=server).predict(project_id=project, classes=SHAPES)
    assert len(predictions) == 4
    for prediction in predictions:
        classes, confidences = _classes_and_confidences(prediction.annotation)
        assert classes == SHAPES and all(0 < c <= 1 for c in confidences)


def test_session_infers_a_project_asynchronously_with_progress_and_stops_when_asked(server, project):
    api = sly.Api("http://127.0.0.1:9", "unused", ignore_task_id=True)  # the session's own URL is used
    session = sly.nn.inference.Session(api, session_url=server, inference_settings={"classes": SHAPES})
    results = session.inference_project_id_async(project, batch_size=1)
    assert len(results) == 4  # the progress' total, before any result
    first = next(results)  # an AnnotationInfo with the annotation's JSON
    assert first.image_id in (100, 101, 102, 103) and sorted(r["class"] for r in rectangles(first.annotation)) == SHAPES
    session.stop_async_inference()
    assert len(list(results)) <= 3  # what was done before the stop, and nothing after
    again = list(session.inference_project_id_async(project, batch_size=2))
    assert sorted(info.image_id for info in again) == [100, 101, 102, 103]
    assert [sorted(r["class"] for r in rectangles(info.annotation)) for info in again] == [SHAPES] * 4


@pytest.fixture(scope="module")
def shapes_png(tmp_path_factory) -> str:
    from PIL import Image

    path = tmp_path_factory.mktemp("team-files") / "pair.png"
    Image.fromarray(two_shapes(*TWO_SHAPE_CASES[1])[0]).save(path)
    return str(path)


def _deploy(url: str, checkpoint, source: str = "Custom models", **extra) -> requests.Response:
    """What a custom deploy sends to ``/deploy_from_api`` (the SDK's deploy API posts this state)."""
    params = {"model_source": source, "model_files": {"checkpoint": checkpoint}, "device": "cpu", **extra}
    return requests.post(f"{url}/deploy_from_api", json={"state": {"deploy_params": params}}, timeout=120)


def _config_with(checkpoint: Path, **changes) -> bytes:
    config = json.loads((checkpoint / "config.json").read_text())
    config["text_config"].update(changes.pop("text_config", {}))
    return json.dumps({**config, **changes}).encode()


def test_a_team_files_checkpoint_deploys_serves_and_is_named_and_a_broken_one_changes_nothing(
    server, stand_in_api, tiny_checkpoint, shapes_png
):
    checkpoint = Path(tiny_checkpoint)
    stand_in_api.put_folder("/kosmos2/finetuned/", checkpoint)
    model = ModelAPI(url=server)
    [before] = model.predict(input=shapes_png)
    try:
        deployed = _deploy(server, "/kosmos2/finetuned")
        assert deployed.status_code == 200, deployed.text
        info = model.get_info()
        assert (info["checkpoint_name"], info["checkpoint_url"]) == ("finetuned", "/kosmos2/finetuned/")
        assert info["model_source"] == "External models"  # the SDK's name for a checkpoint from Team Files
        [after] = model.predict(input=shapes_png)
        assert after.annotation.to_json() == before.annotation.to_json()
        downloads = [call for call in stand_in_api.calls if call[0] == "file-storage.download"]
        assert sorted(path for _, path in downloads) == sorted(
            f"/kosmos2/finetuned/{p.name}" for p in checkpoint.iterdir()
        )

        again = _deploy(server, "/kosmos2/finetuned/", source="External models")  # as the serving GUI sends it
        assert again.status_code == 200, again.text
        assert [call for call in stand_in_api.calls if call[0] == "file-storage.download"] == downloads  # cached

        for folder, changes, message in _broken(checkpoint):
            stand_in_api.put_folder(folder, checkpoint, changes)
            refused = _deploy(server, folder)
            assert refused.status_code == 400, (folder, refused.text)
            assert refused.json()["message"].startswith(FIELD) and message in refused.json()["message"], folder
            assert model.get_info()["checkpoint_url"] == "/kosmos2/finetuned/"
            assert requests.get(f"{server}/is_ready", timeout=5).status_code == 200
        [still] = model.predict(input=shapes_png)
        assert still.annotation.to_json() == before.annotation.to_json()
    finally:
        model.load("Kosmos-2", device="cpu")
    assert model.get_info()["checkpoint_url"] == tiny_checkpoint  # KOSMOS2_CHECKPOINT stands for the listed row


def _broken(checkpoint: Path) -> list[tuple[str, dict, str]]:
    """(Team Files folder, its changes from the tiny checkpoint, what the 400 says)."""
    return [
        ("/kosmos2/no-processor/", {"processor_config.json": None}, "lacks the processor file(s)"),
        ("/kosmos2/pickled/", {"model.safetensors": None, "pytorch_model.bin": b"\x80\x04K\x01."},
         "pickled weights (pytorch_model.bin) are not loaded"),
        ("/kosmos2/clip/", {"config.json": _config_with(checkpoint, model_type="clip")},
         "model_type must be 'kosmos-2', got 'clip'"),
        ("/kosmos2/truncated/", {"model.safetensors": b"not weights" * 64}, "does not load"),
        ("/kosmos2/wrong-shapes/", {"config.json": _config_with(checkpoint, text_config={"ffn_dim": 512})},
         "does not load"),
        ("/kosmos2/hostile/", {"../../etc.json": b"{}"}, "every file must sit directly in the folder"),
        ("/kosmos2/empty-folder/", {name.name: None for name in checkpoint.iterdir()}, "no files there"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ("kosmos2/finetuned", "expected a Team Files folder such as '/kosmos2/finetuned/'"),
        ("/kosmos2/../../etc/", "without '..', backslashes or control characters"),
        ("/kosmos2/\x00/", "without '..', backslashes or control characters"),
        (["/kosmos2/"], "expected a Team Files folder"),
    ],
)
def test_a_hostile_team_files_path_is_a_400_before_the_api_is_asked(server, stand_in_api, checkpoint, message):
    asked = len(stand_in_api.calls)
    refused = _deploy(server, checkpoint)
    assert refused.status_code == 400 and message in refused.json()["message"], refused.text
    assert len(stand_in_api.calls) == asked


SESSION = 77  # the serving task the Predict App connects to


def test_the_predict_app_offers_the_models_classes_and_labels_a_project_in_the_two_selected(
    server, stand_in_api, project, tmp_path
):
    """The SDK's own Predict App, headless in its own process (``tests/support/predict_app.py``):
    connected to the serving session, its class step refuses to go on with nothing selected and
    passes with COCO's ``person`` on a fresh deploy; with the model deployed to declare the
    shapes, a run with two selected creates the output project in those classes."""
    stand_in_api.serve_session(SESSION, server)
    plan = {"api": stand_in_api.url, "server": server, "session": SESSION, "project": project,
            "offered": ["person"], "declare": ["circle", "square", "triangle"], "run": SHAPES}  # fmt: skip
    env = {**os.environ, "TEAM_ID": "1", "WORKSPACE_ID": "5", "SERVER_ADDRESS": stand_in_api.url, "API_TOKEN": "t"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "tests.support.predict_app", json.dumps(plan)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = [json.loads(line[len(REPORT) :]) for line in done.stdout.splitlines() if line.startswith(REPORT)]
    assert report["offered"][:3] == ["person", "bicycle", "car"] and len(report["offered"]) >= 80
    assert (report["nothing_selected"], report["offered_selected"]) == (False, True)
    assert report["selected"] == SHAPES and report["predictions"] == 4
    [(_, sent)] = [f for f in stand_in_api.forwarded if f[0] == "inference_batch_ids_async"]
    assert json.loads(sent)["state"]["settings"]["classes"] == SHAPES  # the app's selection, not a default
    [output] = [i for i, p in stand_in_api.projects.items() if p["name"] == "Predictions"]
    meta = sly.ProjectMeta.from_json(stand_in_api.projects[output]["meta"])
    assert {c.name for c in meta.obj_classes} >= set(SHAPES) and meta.get_tag_meta("confidence") is not None
    assert {c.geometry_type for c in meta.obj_classes if c.name in SHAPES} == {sly.Rectangle}
    datasets = {d for d, dataset in stand_in_api.datasets.items() if dataset["project"] == output}
    labelled = {i: a for i, a in stand_in_api.annotations.items() if stand_in_api.images[i]["dataset"] in datasets}
    assert len(labelled) == 4
    for annotation in labelled.values():
        found = rectangles(annotation)
        assert sorted(r["class"] for r in found) == SHAPES and all(r["confidence"] for r in found)
    assert ModelAPI(url=server).get_classes()[:3] == ["person", "bicycle", "car"]  # COCO's again
