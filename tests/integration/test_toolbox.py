"""The labelling toolbox's selected box (``mode: "reference_image"``, ``reference_bbox``): the
box described on the whole image and the asked classes found in its crop, one result; every
wrong form a 400 naming the field."""

from __future__ import annotations

import pytest

from tests.support.app_harness import infer_image, rectangles
from tests.support.helpers import TWO_SHAPE_CASES, tlbr_iou, two_shapes


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
