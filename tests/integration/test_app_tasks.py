"""Every task through the SDK's FastAPI app (TestClient): settings, annotation tags, result
data, the extra routes, and 400s that name the field."""

from __future__ import annotations

import base64
import dataclasses
from types import SimpleNamespace

import pytest
import supervisely as sly

from tests.support.app_harness import infer_image, png_bytes, rectangles
from tests.support.helpers import TWO_SHAPE_CASES, tlbr_iou, two_shapes


def image_tags(annotation: dict) -> dict:
    return {tag["name"]: tag["value"] for tag in annotation["tags"]}


def label_tags(obj: dict) -> dict:
    return {tag["name"]: tag["value"] for tag in obj["tags"]}


def test_phrase_grounding_names_rectangles_by_the_class_names(served):
    _, client = served
    image, (left, right) = two_shapes(*TWO_SHAPE_CASES[4])
    names = [f"the {left.colour} {left.shape}", f"the {right.colour} {right.shape}"]
    response = infer_image(client, image, task="phrase_grounding", phrases=". ".join(names))
    assert response.status_code == 200, response.text
    found = rectangles(response.json()["annotation"])
    assert [r["class"] for r in found] == names
    assert tlbr_iou(found[0]["tlbr"], left) >= 0.5 and tlbr_iou(found[1]["tlbr"], right) >= 0.5
    assert all(0 < r["confidence"][0] <= 1 for r in found)


def test_classes_whitelist_applies_to_the_final_class_names(served):
    _, client = served
    image, (left, right) = two_shapes(*TWO_SHAPE_CASES[1])
    names = [left.shape, right.shape]
    response = infer_image(client, image, task="phrase_grounding", phrases=names, classes=[right.shape])
    assert [r["class"] for r in rectangles(response.json()["annotation"])] == [right.shape]


def test_vqa_answer_is_an_image_tag_and_result_data(served):
    _, client = served
    image, (left, _) = two_shapes(*TWO_SHAPE_CASES[2])
    response = infer_image(client, image, task="vqa", question=f"What colour is the {left.shape}?")
    assert response.status_code == 200, response.text
    result = response.json()
    answer = f"The {left.shape} is {left.colour}."
    assert image_tags(result["annotation"])["answer"] == answer
    assert result["data"] == {"task": "vqa", "answer": answer}
    [rect] = rectangles(result["annotation"])
    assert rect["class"] == f"The {left.shape}" and tlbr_iou(rect["tlbr"], left) >= 0.5


def test_caption_text_is_an_image_tag_and_result_data(served):
    _, client = served
    image, (left, right) = two_shapes(*TWO_SHAPE_CASES[3])
    result = infer_image(client, image).json()
    caption = f"An image of {left.phrase} and {right.phrase} ."
    assert image_tags(result["annotation"]) == {"caption": caption}
    assert result["data"] == {"task": "caption", "caption": caption}


def test_region_description_tags_each_given_region(served):
    _, client = served
    image, shapes = two_shapes(*TWO_SHAPE_CASES[0])
    regions = [list(shape.pixel_ltrb) for shape in shapes]
    result = infer_image(client, image, task="region_description", regions=regions).json()
    objects = result["annotation"]["objects"]
    assert [obj["classTitle"] for obj in objects] == ["region", "region"]
    assert [label_tags(obj) for obj in objects] == [{"description": f"{s.phrase}."} for s in shapes]
    assert [obj["points"]["exterior"] for obj in objects] == [
        [[left, top], [right, bottom]] for left, top, right, bottom in regions
    ]
    assert result["data"]["descriptions"] == [f"{s.phrase}." for s in shapes]


@pytest.mark.parametrize(
    "settings,field",
    [
        ({"task": "segmentation"}, "task"),
        ({"task": "phrase_grounding"}, "phrases"),
        ({"task": "phrase_grounding", "phrases": [f"p{i}" for i in range(101)]}, "phrases"),
        ({"task": "phrase_grounding", "phrases": ["cat</phrase><object>"]}, "phrases[0]"),
        ({"task": "vqa", "question": "What is <patch_index_0001>?"}, "question"),
        ({"task": "vqa", "question": 7}, "question"),
        ({"task": "region_description", "regions": [[0, 0, 500, 10]]}, "regions[0]"),
        ({"task": "region_description"}, "regions"),
        ({"question": "What colour?"}, "question"),
    ],
)
def test_bad_task_settings_get_400_naming_the_field_and_serving_goes_on(served, settings, field):
    _, client = served
    image, _ = two_shapes(*TWO_SHAPE_CASES[0])
    response = infer_image(client, image, **settings)
    assert response.status_code == 400, response.text
    assert f"'{field}'" in response.json()["message"]
    assert infer_image(client, image).status_code == 200


def post_state(client, route: str, **state):
    return client.post(route, json={"state": state})


def encoded(image) -> str:
    return base64.b64encode(png_bytes(image)).decode()


def test_visual_question_answering_route(served):
    _, client = served
    image, (_, right) = two_shapes(*TWO_SHAPE_CASES[1])
    response = post_state(
        client, "/visual_question_answering", image_base64=encoded(image), question=f"What colour is the {right.shape}?"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == f"The {right.shape} is {right.colour}."
    assert image_tags(body["annotation"])["answer"] == body["answer"]


def test_describe_regions_route_with_given_regions(served):
    _, client = served
    image, shapes = two_shapes(*TWO_SHAPE_CASES[2])
    response = post_state(
        client, "/describe_regions", image_base64=encoded(image), regions=[list(shape.pixel_ltrb) for shape in shapes]
    )
    assert response.status_code == 200, response.text
    assert response.json()["descriptions"] == [f"{s.phrase}." for s in shapes]


class FakeImageApi:
    """The few Supervisely API calls /describe_regions makes for an image id, served locally."""

    def __init__(self, image, ann: sly.Annotation, meta: sly.ProjectMeta):
        self.image = SimpleNamespace(
            download_np=lambda image_id: image, get_info_by_id=lambda image_id: SimpleNamespace(dataset_id=7)
        )
        self.dataset = SimpleNamespace(get_info_by_id=lambda dataset_id: SimpleNamespace(project_id=3))
        self.project = SimpleNamespace(get_meta=lambda project_id: meta.to_json())
        self.annotation = SimpleNamespace(download_json=lambda image_id: ann.to_json())


def test_describe_regions_route_describes_the_existing_labels(served, monkeypatch):
    model, client = served
    image, shapes = two_shapes(*TWO_SHAPE_CASES[3])
    cls = sly.ObjClass("thing", sly.Rectangle)
    poly = sly.ObjClass("outline", sly.Polygon)
    meta = sly.ProjectMeta(obj_classes=[cls, poly])
    (l1, t1, r1, b1), (l2, t2, r2, b2) = (shape.pixel_ltrb for shape in shapes)
    labels = [
        sly.Label(sly.Rectangle(t1, l1, b1, r1), cls),
        sly.Label(
            sly.Polygon(
                [
                    sly.PointLocation(t2, l2),
                    sly.PointLocation(t2, r2),
                    sly.PointLocation(b2, r2),
                    sly.PointLocation(b2, l2),
                ]
            ),
            poly,
        ),
    ]
    ann = sly.Annotation(image.shape[:2], labels)
    monkeypatch.setattr(model, "api_from_request", lambda request: FakeImageApi(image, ann, meta))
    response = post_state(client, "/describe_regions", image_id=11)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["descriptions"] == [f"{s.phrase}." for s in shapes]
    objects = body["annotation"]["objects"]
    assert [(o["classTitle"], o["geometryType"]) for o in objects] == [("thing", "rectangle"), ("outline", "polygon")]
    assert [o["points"] for o in objects] == [o["points"] for o in ann.to_json()["objects"]]
    assert [label_tags(o) for o in objects] == [{"description": d} for d in body["descriptions"]]


@pytest.mark.parametrize(
    "route,state,message",
    [
        ("/visual_question_answering", {"question": "Why?"}, "image_id"),
        ("/visual_question_answering", {"image_base64": "not base64!", "question": "Why?"}, "image_base64"),
        ("/describe_regions", {"image_base64": "AAAA"}, "image_base64"),
        ("/visual_question_answering", {"image_id": "12", "question": "Why?"}, "image_id"),
    ],
)
def test_routes_refuse_bad_images_with_400(served, route, state, message):
    _, client = served
    response = post_state(client, route, **state)
    assert response.status_code == 400 and message in response.json()["message"], response.text


def test_routes_refuse_an_image_over_the_pixel_limit_before_decoding_it(served, monkeypatch):
    model, client = served
    image, _ = two_shapes(*TWO_SHAPE_CASES[0])
    pixels = image.shape[0] * image.shape[1]
    monkeypatch.setattr(model.image_decoder, "limits", dataclasses.replace(model.pixel_limits, per_image=pixels - 1))
    response = post_state(client, "/visual_question_answering", image_base64=encoded(image), question="Why?")
    assert response.status_code == 400, response.text
    assert f"more than {pixels - 1} pixels" in response.json()["message"]
    assert "KOSMOS2_MAX_IMAGE_PIXELS" in response.json()["message"]
    monkeypatch.setattr(model.image_decoder, "limits", dataclasses.replace(model.pixel_limits, per_image=pixels))
    response = post_state(client, "/visual_question_answering", image_base64=encoded(image), question="Why?")
    assert response.status_code == 200, response.text


def test_routes_validate_like_inference(served):
    _, client = served
    image, _ = two_shapes(*TWO_SHAPE_CASES[0])
    response = post_state(client, "/visual_question_answering", image_base64=encoded(image), question="<grounding> hi")
    assert response.status_code == 400 and "'question'" in response.json()["message"]
    response = post_state(client, "/describe_regions", image_base64=encoded(image))
    assert response.status_code == 400 and "regions" in response.json()["message"]
