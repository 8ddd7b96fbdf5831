"""What the platform's apps need of the model, in process (one app for the module):

* declared classes: a fresh deploy offers COCO's 80 classes, ``classes`` in the settings finds
  those classes, a deploy may declare its own, and every wrong form is a 400 naming the field;
* the labelling toolbox's selected box (``mode: "reference_image"``, ``reference_bbox``): the box
  described on the whole image and the asked classes found in its crop, one result;
* the serving GUI's "Models from other sources" tab: a Team Files folder deployed through the
  app's own fetch (the stand-in API serves it)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from kosmos2_app import Kosmos2
from kosmos2_app.ontology import COCO_CLASSES, Ontology, find_settings, finds_classes
from kosmos2_engine import SettingsError
from tests.support.app_harness import deploy_on_cpu, infer_image, rectangles
from tests.support.fake_supervisely import FakeProject
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, tlbr_iou, two_shapes
from tests.support.stand_in_api import StandInSupervisely

SHAPES = ["circle", "square", "triangle"]


def _meta(client) -> dict:
    response = client.post("/get_output_classes_and_tags", json={})
    assert response.status_code == 200, response.text
    return response.json()


def _deploy(client, **params):
    params = {"model_source": "Pretrained models", "device": "cpu", **params}
    state = {"deploy_params": params, "model_name": "Kosmos-2"}
    return client.post("/deploy_from_api", json={"state": state})


def test_a_fresh_deploy_declares_cocos_classes_as_rectangles_with_the_confidence_tag(served):
    model, client = served
    meta = _meta(client)
    declared = [c for c in meta["classes"] if c["title"] in COCO_CLASSES]
    assert [c["title"] for c in declared] == list(COCO_CLASSES)
    assert {c["shape"] for c in declared} == {"rectangle"}
    assert "confidence" in {t["name"] for t in meta["tags"]}
    assert set(COCO_CLASSES) <= set(model.get_classes())


def test_classes_find_those_classes_and_nothing_else(served):
    _, client = served
    image, (left, right) = two_shapes(*TWO_SHAPE_CASES[1])  # a yellow square and a red triangle
    found = rectangles(infer_image(client, image, classes=[right.shape]).json()["annotation"])
    assert [r["class"] for r in found] == [right.shape]
    assert tlbr_iou(found[0]["tlbr"], right) >= 0.5 and 0 < found[0]["confidence"][0] <= 1
    both = rectangles(infer_image(client, image, classes=[left.shape, right.shape]).json()["annotation"])
    assert sorted(r["class"] for r in both) == sorted([left.shape, right.shape])


def test_a_class_with_its_own_phrase_is_found_by_that_phrase_and_named_by_the_class(served):
    model, client = served
    image, (left, _) = two_shapes(*TWO_SHAPE_CASES[0])  # "blue circle" finds it, "circle" alone not
    response = infer_image(client, image, classes={"ball": f"{left.colour} {left.shape}"})
    [found] = rectangles(response.json()["annotation"])
    assert found["class"] == "ball" and tlbr_iou(found["tlbr"], left) >= 0.5
    assert "ball" in model.get_classes()  # an open-vocabulary class joins the meta


def test_phrase_grounding_without_phrases_finds_the_classes_and_with_phrases_filters(served):
    _, client = served
    image, (left, right) = two_shapes(*TWO_SHAPE_CASES[1])
    found = infer_image(client, image, task="phrase_grounding", classes=[left.shape]).json()["annotation"]
    assert [r["class"] for r in rectangles(found)] == [left.shape]
    kept = infer_image(client, image, task="phrase_grounding", phrases=SHAPES[:2], classes=["square"])
    assert [r["class"] for r in rectangles(kept.json()["annotation"])] == ["square"]


def test_other_tasks_keep_their_text_and_only_the_classes_asked_for(served):
    _, client = served
    image, drawn = scene(*SCENE_CASES[1])
    kept = infer_image(client, image, task="custom", prompt="An image of", classes=[drawn.phrase]).json()
    assert [r["class"] for r in rectangles(kept["annotation"])] == [drawn.phrase]
    assert kept["annotation"]["tags"][0]["value"].startswith("An image of")
    none = infer_image(client, image, task="custom", prompt="An image of", classes=["a green circle"]).json()
    assert rectangles(none["annotation"]) == [] and none["annotation"]["tags"]


@pytest.mark.parametrize(
    ("classes", "field"),
    [
        (5, "classes"),
        ([], "classes"),
        (["ok", 3], "classes[1]"),
        (["ok", ["x"]], "classes[1]"),
        ({"car": 7}, "classes.car"),
        ("[1", "classes"),
        (["x" * 201], "classes[0]"),
    ],
)
def test_wrong_classes_are_a_400_naming_the_field(served, classes, field):
    _, client = served
    image = scene(*SCENE_CASES[0])[0]
    response = infer_image(client, image, classes=classes)
    assert response.status_code == 400 and f"'{field}'" in response.json()["message"], response.text
    assert infer_image(client, image).status_code == 200


def test_the_ontology_reads_names_objects_and_text():
    assert Ontology.parse(["car", " dog "]).phrases == {"car": "car", "dog": "dog"}
    assert Ontology.parse({"car": "a red car"}).phrase_of("car") == "a red car"
    assert Ontology.parse("car, dog\nbus").names == ("car", "dog", "bus")
    assert Ontology.parse('["car"]').names == ("car",)
    assert Ontology.default().phrase_of("zebra crossing") == "zebra crossing"  # open vocabulary
    declared = Ontology.parse({"car": {"phrase": "a car", "geometry": "mask"}, "bus": {}, "van": "a van"})
    assert declared.phrases == {"car": "a car", "bus": "bus", "van": "a van"} and declared.masked == {"car"}
    with pytest.raises(SettingsError, match=r"'classes\.car': takes 'phrase' and 'geometry', not 'shape'"):
        Ontology.parse({"car": {"shape": "mask"}})
    with pytest.raises(SettingsError, match="at most 2 classes"):
        Ontology.parse(["a", "b", "c"], limit=2)


def test_only_the_default_task_or_grounding_without_phrases_is_turned_into_finding():
    ontology = Ontology.parse({"car": "a car"})
    assert find_settings({"classes": ["car", "bus"]}, ontology) == {
        "classes": ["car", "bus"],
        "task": "phrase_grounding",
        "phrases": {"car": "a car", "bus": "bus"},
    }
    own = find_settings({"classes": '{"car": "a red car", "bus": "bus"}'}, ontology)  # as text, as YAML may send it
    assert own["phrases"] == {"car": "a red car", "bus": "bus"}
    assert finds_classes({"task": " Caption ", "classes": ["car"]})
    with pytest.raises(SettingsError, match="'classes': at most 100 classes"):
        find_settings({"classes": [f"c{i}" for i in range(101)]}, ontology)
    with pytest.raises(SettingsError, match="'KOSMOS2_CLASSES': is not valid JSON"):
        Ontology.parse("[1", "KOSMOS2_CLASSES")
    assert finds_classes({"task": "caption", "classes": ["car"]})
    assert not finds_classes({"task": "vqa", "question": "Why?", "classes": ["car"]})
    assert not finds_classes({"classes": "all"}) and not finds_classes({"classes": None})
    assert not finds_classes({"task": "phrase_grounding", "phrases": ["a"], "classes": ["a"]})


def test_a_project_inference_with_classes_labels_only_those_classes(served, monkeypatch):
    """What ``ModelAPI.predict(project_id=..., classes=[...])`` and the Predict App start: the
    SDK's own project job, over a stand-in project of four two-shape scenes."""
    model, client = served
    images = [two_shapes(*case)[0] for case in TWO_SHAPE_CASES[1:]]  # each a square and a triangle
    monkeypatch.setattr(model, "api_from_request", lambda request: FakeProject(images))
    state = {"projectId": 1, "batch_size": 2, "settings": {"classes": ["square", "triangle"]}}
    started = client.post("/inference_project_id_async", json={"state": state})
    assert started.status_code == 200, started.text
    uuid = {"inference_request_uuid": started.json()["inference_request_uuid"]}
    deadline = time.monotonic() + 60
    while client.post("/get_inference_progress", json={"state": uuid}).json()["is_inferring"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    results = client.post("/pop_inference_results", json={"state": uuid}).json()["pending_results"]
    assert len(results) == len(images)
    for result in results:
        found = rectangles(result["annotation"])
        assert sorted(r["class"] for r in found) == ["square", "triangle"]
        assert all(0 < r["confidence"][0] <= 1 for r in found)


def test_a_deploy_declares_its_own_classes_and_a_wrong_list_changes_nothing(served):
    """It changes the served model's classes (and puts COCO's back)."""
    _, client = served
    refused = _deploy(client, classes={"car": ""})
    assert refused.status_code == 400 and "deploy_params.classes.car" in refused.json()["message"]
    assert client.get("/is_ready").status_code == 200
    assert [c["title"] for c in _meta(client)["classes"]][:80] == list(COCO_CLASSES)
    try:
        assert _deploy(client, classes=SHAPES).status_code == 200
        assert [c["title"] for c in _meta(client)["classes"]] == SHAPES  # the deploy's, and only those
        image, drawn = scene(*SCENE_CASES[2])  # a green triangle
        found = rectangles(infer_image(client, image, classes=["triangle"]).json()["annotation"])
        assert [r["class"] for r in found] == ["triangle"] and tlbr_iou(found[0]["tlbr"], drawn) >= 0.5
    finally:
        assert _deploy(client, classes=list(COCO_CLASSES)).status_code == 200


def test_a_class_declared_as_a_mask_is_a_bitmap_class_segmented_on_every_request(served):
    """``{"square": {"geometry": "mask"}}``: the meta the Predict App reads at start says Bitmap
    for ``square`` (rectangle for ``triangle``), a request with no ``masks`` gets the square as
    a Bitmap (IoU >= 0.85 with the drawn square) and the triangle as a rectangle, and the meta
    still says Bitmap; a rectangle of the class (``keep_boxes``) widens it to any geometry. A
    request's own ``classes`` may say the geometry too."""
    import random

    import supervisely as sly

    from tests.tiny_model.scenes import draw_two_shapes

    _, client = served
    wrong = _deploy(client, classes={"square": {"geometry": "polygon"}})
    assert wrong.status_code == 400 and "deploy_params.classes.square.geometry" in wrong.json()["message"]
    pixels, (square, _) = draw_two_shapes(random.Random(11), 200, 150, (("yellow", "square"), ("red", "triangle")))
    image = np.asarray(pixels)  # samples/shapes.png: the scene the tiny SAM 2 is held to 0.85 on
    try:
        declared = {"square": {"phrase": "square", "geometry": "mask"}, "triangle": "triangle"}
        assert _deploy(client, classes=declared).status_code == 200
        shapes = {c["title"]: c["shape"] for c in _meta(client)["classes"]}
        assert shapes == {"square": "bitmap", "triangle": "rectangle"}
        assert "mask_quality" in {t["name"] for t in _meta(client)["tags"]}
        annotation = infer_image(client, image, classes=["square", "triangle"]).json()["annotation"]
        ann = sly.Annotation.from_json(annotation, sly.ProjectMeta.from_json(_meta(client)))
        by_class = {label.obj_class.name: label for label in ann.labels}
        assert isinstance(by_class["square"].geometry, sly.Bitmap)
        assert isinstance(by_class["triangle"].geometry, sly.Rectangle)
        left, top, right, bottom = square.pixel_ltrb
        truth = np.zeros(image.shape[:2], bool)
        truth[top : bottom + 1, left : right + 1] = True
        drawn = np.zeros(image.shape[:2], bool)
        by_class["square"].geometry.draw(drawn, True)
        assert (drawn & truth).sum() / (drawn | truth).sum() >= 0.85
        assert {c["title"]: c["shape"] for c in _meta(client)["classes"]} == shapes  # no conflict, no change
        kept = infer_image(client, image, classes=["square"], keep_boxes=True).json()["annotation"]
        assert sorted(o["geometryType"] for o in kept["objects"]) == ["bitmap", "rectangle"]
        assert {c["title"]: c["shape"] for c in _meta(client)["classes"]}["square"] == "any"
    finally:
        assert _deploy(client, classes=list(COCO_CLASSES)).status_code == 200
    asked = infer_image(client, image, classes={"square": {"geometry": "mask"}}).json()["annotation"]  # per request
    assert [(o["classTitle"], o["geometryType"]) for o in asked["objects"]] == [("square", "bitmap")]


def test_the_operators_classes_are_read_at_start_and_checked(monkeypatch):
    """What ``Kosmos2.__init__`` reads, before the SDK's constructor runs."""
    monkeypatch.setenv("KOSMOS2_CLASSES", "circle, square")
    assert Kosmos2._operators_ontology().names == ("circle", "square")
    monkeypatch.setenv("KOSMOS2_CLASSES", '{"car": 5}')
    with pytest.raises(ValueError, match="KOSMOS2_CLASSES.car"):
        Kosmos2._operators_ontology()
    monkeypatch.delenv("KOSMOS2_CLASSES")
    assert Kosmos2._operators_ontology().names == COCO_CLASSES


# The labelling toolbox's selected box.


def _selected(image, shape, margin: int = 6) -> list[int]:
    """A box around a drawn shape, as the toolbox sends it: pixel [top, left, bottom, right]."""
    height, width = image.shape[:2]
    left, top, right, bottom = shape.pixel_ltrb
    top, left = max(0, top - margin), max(0, left - margin)
    return [top, left, min(height - 1, bottom + margin), min(width - 1, right + margin)]


def _reference(box, **settings) -> dict:
    return {"mode": "reference_image", "reference_bbox": box, "reference_image_id": 7, **settings}


def test_a_selected_box_is_described_and_the_asked_classes_found_inside_it(served):
    _, client = served
    image, (_, square) = two_shapes(*TWO_SHAPE_CASES[3])  # a green triangle, a yellow square
    box = _selected(image, square)
    response = infer_image(client, image, **_reference(box, classes=["square"]))
    assert response.status_code == 200, response.text
    body = response.json()
    labels = rectangles(body["annotation"])
    [region] = [label for label in labels if label["class"] == "region"]
    assert region["tlbr"] == tuple(box)
    objects = body["annotation"]["objects"]
    [description] = [tag["value"] for o in objects for tag in o["tags"] if tag["name"] == "description"]
    assert body["data"] == {"task": "region_description", "descriptions": [description]}
    assert "yellow" in description
    [found] = [label for label in labels if label["class"] != "region"]
    assert found["class"] == "square" and found["confidence"] and tlbr_iou(found["tlbr"], square) >= 0.5
    top, left, bottom, right = found["tlbr"]
    assert box[0] <= top <= bottom <= box[2] and box[1] <= left <= right <= box[3]


def test_the_merged_result_is_the_description_on_the_image_plus_the_classes_in_the_crop(served):
    """Exactly what the two requests it stands for give: region_description of the box, and
    the classes with the box as region of interest (its boxes shifted back into the image)."""
    _, client = served
    image, (left_shape, right_shape) = two_shapes(*TWO_SHAPE_CASES[1])
    for shape in (left_shape, right_shape):
        box = _selected(image, shape, margin=20)
        top, left, bottom, right = box
        merged = infer_image(client, image, **_reference(box, classes=["circle", "triangle"])).json()
        described = infer_image(client, image, task="region_description", regions=[[left, top, right, bottom]]).json()
        rectangle = {"points": {"exterior": [[left, top], [right, bottom]], "interior": []}}
        inside = infer_image(client, image, classes=["circle", "triangle"], rectangle=rectangle).json()
        assert merged["data"] == described["data"]
        expected = rectangles(inside["annotation"]) + rectangles(described["annotation"])
        assert sorted(map(repr, rectangles(merged["annotation"]))) == sorted(map(repr, expected))


def test_without_classes_the_boxes_own_class_is_searched_and_without_either_it_is_only_described(served):
    _, client = served
    image, (_, square) = two_shapes(*TWO_SHAPE_CASES[3])
    box = _selected(image, square)
    named = infer_image(client, image, **_reference(box, reference_class_name="square")).json()["annotation"]
    named = rectangles(named)
    assert {label["class"] for label in named} == {"square", "region"}
    alone = rectangles(infer_image(client, image, **_reference(box)).json()["annotation"])
    assert [label["class"] for label in alone] == ["region"]
    plain = infer_image(client, image, mode="text_prompt").json()  # the toolbox's other mode: an ordinary request
    assert plain["data"]["task"] == "caption"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "visual_prompt"}, "mode: expected 'text_prompt' or 'reference_image', got 'visual_prompt'"),
        ({"reference_bbox": [0, 0, 10, 10]}, "reference_bbox: is read only with mode 'reference_image'"),
        (_reference(None), "reference_bbox: expected the selected box as pixels [top, left, bottom, right]"),
        (_reference([10, 10, 5, 20]), "reference_bbox: expected the selected box"),
        (_reference([0, 0, 10, "20"]), "reference_bbox: expected the selected box"),
        (_reference([0, 0, 10, float("nan")]), "reference_bbox: expected the selected box"),
        (_reference([0, 0, 10, True]), "reference_bbox: expected the selected box"),
        (_reference([0, 0, 10, 500]), "reference_bbox: [0, 0, 10, 500] (top, left, bottom, right) does not lie inside"),
        (
            _reference([0, 0, 10, 10], rectangle={"points": {"exterior": [[20, 20], [60, 60]], "interior": []}}),
            "reference_bbox: the selected box must lie inside the region of interest",
        ),
        (_reference([0, 0, 10, 10], max_new_tokens=0), "max_new_tokens"),
        (_reference([0, 0, 10, 10], classes=[""]), "classes[0]"),
    ],
)
def test_a_wrong_selected_box_is_a_400_naming_the_field(served, settings, message):
    _, client = served
    image, _ = two_shapes(*TWO_SHAPE_CASES[3])
    response = infer_image(client, image, **settings)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


# The serving GUI's tab for checkpoints from Team Files.


def test_the_serve_button_deploys_a_team_files_folder_typed_into_the_external_tab(served, tiny_checkpoint, monkeypatch):
    model, client = served
    gui = model.gui
    with StandInSupervisely() as api:
        api.put_folder("/kosmos2/finetuned/", Path(tiny_checkpoint))
        monkeypatch.setenv("SERVER_ADDRESS", api.url)
        gui.model_source_tabs.set_active_tab("External models")
        gui.external_models_selector.set_checkpoint_path("/kosmos2/finetuned/")
        try:
            gui.deploy_with_current_params()  # what the Serve button's click runs
            info = client.post("/get_deploy_info", json={}).json()
            assert (info["checkpoint_name"], info["checkpoint_url"]) == ("finetuned", "/kosmos2/finetuned/")
            assert client.get("/is_ready").status_code == 200
            assert {path for method, path in api.calls if method == "file-storage.list"} == {"/kosmos2/finetuned/"}
        finally:
            gui.model_source_tabs.set_active_tab("Pretrained models")
            assert deploy_on_cpu(client).status_code == 200
    assert client.post("/get_deploy_info", json={}).json()["checkpoint_url"] == tiny_checkpoint
