"""SAM 2 behind boxes: the tiny SAM 2 this repository trains, and the engine's batched path
against transformers' own ``Sam2Model`` called one box at a time."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kosmos2_engine import BoxSegmenter
from kosmos2_engine.segmentation import sam_pixels, square_side
from tests.support.app_harness import TINY_SAM2
from tests.tiny_model.scenes import draw_two_shapes
from tests.tiny_sam2.train import example


@pytest.fixture(scope="module")
def segmenter() -> BoxSegmenter:
    return BoxSegmenter.load(str(TINY_SAM2))


def _iou(mask, origin, truth: np.ndarray) -> float:
    full = np.zeros_like(truth)
    full[origin[0] : origin[0] + mask.shape[0], origin[1] : origin[1] + mask.shape[1]] = mask
    return float((full & truth).sum() / (full | truth).sum())


def test_the_tiny_sam2_segments_shapes_it_never_saw(segmenter):
    """Scenes from a seed training never drew (one shape or two): the mask of each box covers its
    shape with an IoU of at least 0.85 on average, and 0.7 for nine in ten."""
    rng = random.Random(4242)
    scenes = [example(rng) for _ in range(48)]
    masks = segmenter.segment([image for image, _, _ in scenes], [box[None] for _, _, box in scenes])
    ious = [_iou(found.mask, found.origin, truth) for [found], (_, truth, _) in zip(masks, scenes)]
    assert np.mean(ious) >= 0.85 and np.percentile(ious, 10) >= 0.7, (np.mean(ious), sorted(ious)[:5])


def _shape_truth(pixels: np.ndarray, ltrb) -> np.ndarray:
    """The pixels of the shape drawn in ``ltrb`` (those not of the grey background)."""
    left, top, right, bottom = ltrb
    truth = np.zeros(pixels.shape[:2], bool)
    truth[top : bottom + 1, left : right + 1] = ~np.all(pixels[top : bottom + 1, left : right + 1] == pixels[0, 0], -1)
    return truth


def test_each_box_of_an_image_gets_its_own_shape(segmenter):
    """Two-shape scenes, both boxes in one call: each mask covers its own shape (mean IoU >= 0.85),
    and nine masks in ten (of 40) overlap their own shape more than the other one."""
    rng, own, other = random.Random(5), [], []
    for _ in range(20):
        image, shapes = draw_two_shapes(rng, rng.randint(96, 320), rng.randint(48, 320))
        pixels = np.asarray(image)
        boxes = np.array([[s.pixel_ltrb[0], s.pixel_ltrb[1], s.pixel_ltrb[2] + 1, s.pixel_ltrb[3] + 1] for s in shapes])
        [masks] = segmenter.segment([pixels], [boxes])
        truths = [_shape_truth(pixels, s.pixel_ltrb) for s in shapes]
        for mask, truth, rival in zip(masks, truths, truths[::-1]):
            own.append(_iou(mask.mask, mask.origin, truth))
            other.append(_iou(mask.mask, mask.origin, rival))
            assert 0 <= mask.quality <= 1
    followed = sum(a > b for a, b in zip(own, other))
    assert np.mean(own) >= 0.85 and followed >= 0.9 * len(own), (np.mean(own), followed)


def test_the_batched_path_equals_sam2_one_box_at_a_time(segmenter):
    """Two images (three boxes and one) in one call: the masks and qualities of transformers'
    ``Sam2Model`` run on each image and each box alone, on the same weights and inputs."""
    rng = random.Random(7)
    scenes = [example(rng) for _ in range(4)]
    images = [scenes[0][0], scenes[3][0]]
    first = np.stack([scenes[0][2], scenes[1][2] * 0.5, scenes[2][2] * 0.7])  # its own box and two others
    batched = segmenter.segment(images, [first, scenes[3][2][None]])
    model, side = segmenter.model, segmenter.image_size
    for image, boxes, masks in zip(images, [first, scenes[3][2][None]], batched):
        height, width = image.shape[:2]
        pixels = torch.from_numpy(sam_pixels(image, side))[None]
        for box, found in zip(boxes, masks):
            scaled = torch.from_numpy((box * np.array([side / width, side / height] * 2)).astype(np.float32))
            with torch.no_grad():
                alone = model(pixel_values=pixels, input_boxes=scaled[None, None], multimask_output=False)
            logits = torch.nn.functional.interpolate(alone.pred_masks[0, :, 0][None], size=(height, width),
                                                     mode="bilinear", align_corners=False)[0, 0]  # fmt: skip
            truth = (logits > 0).numpy()
            if not truth.any():  # an empty mask alone: empty in the batch too
                assert found.mask.size == 0
            else:
                assert _iou(found.mask, found.origin, truth) >= 0.99
            assert found.quality == pytest.approx(float(alone.iou_scores[0, 0, 0].clamp(0, 1)), abs=1e-4)


def test_images_without_boxes_cost_nothing_and_get_no_masks(segmenter):
    image = example(random.Random(1))[0]
    assert segmenter.segment([image, image], [np.zeros((0, 4)), np.zeros((0, 4))]) == [[], []]


def test_masks_widen_their_class_once_and_the_meta_is_published_only_when_it_changes():
    import supervisely as sly
    from supervisely.nn.prediction_dto import PredictionBBox

    from kosmos2_app.results.annotations import AnnotationBuilder
    from kosmos2_engine import BoxMask

    published: list = []
    builder = AnnotationBuilder(on_meta_change=published.append)
    builder.declare(["square"])
    before = len(published)
    box, mask = PredictionBBox("square", [10, 10, 29, 29], 0.5), BoxMask(np.ones((20, 20), bool), (10, 10), 0.9)
    for _ in range(3):
        annotation = builder.annotation(50, 50, [box], masks=[mask])
    assert len(published) == before + 1, "the class widened and the quality tag added once, then nothing new"
    assert builder.meta.get_obj_class("square").geometry_type is sly.AnyGeometry
    assert [type(label.geometry) for label in annotation.labels] == [sly.Bitmap]


def test_sam2_input_side_reads_the_released_configs_list_and_refuses_a_rectangle():
    """The released SAM 2 configs write ``image_size`` as ``[1024, 1024]`` (``Sam2Config()`` too);
    the tiny one as an int."""
    from transformers import Sam2Config

    assert square_side(Sam2Config().vision_config.backbone_config.image_size) == 1024
    assert square_side(128) == 128
    with pytest.raises(ValueError, match="not square"):
        square_side([512, 1024])


def test_sam2_follows_the_engine_to_another_device_once_loaded_and_not_before():
    """An idle freeze moves the engine to CPU and back; a loaded SAM 2 moves with it (on the
    engine thread: ``call``), one not yet loaded stays unloaded."""
    from kosmos2_app.masks import LazySegmenter

    calls = []

    def call(function, *args):
        calls.append(getattr(function, "__name__", ""))
        return function(*args)

    lazy = LazySegmenter(str(TINY_SAM2))
    lazy.follow(call, "cpu:0")
    assert not lazy.loaded and calls == []
    segmenter = lazy.get(call, "cpu")
    lazy.follow(call, "cpu")  # already there: nothing to do
    lazy.follow(call, "cpu:0")
    assert calls == ["load", "to"] and segmenter.device == "cpu:0"
    image, _ = draw_two_shapes(random.Random(5), 128, 96)
    [[mask]] = segmenter.segment([np.asarray(image)], [np.array([[4, 4, 60, 60]], np.float32)])
    assert mask.area > 0


def test_which_sam2_a_deploy_uses_is_the_model_rows_choice_for_its_device(monkeypatch):
    """The model table: Hiera large on GPU, tiny on CPU (the OpenVINO rows: tiny); a row that
    names none (a Team Files checkpoint) takes the default row's; ``KOSMOS2_SAM2`` stands for
    every row's; a choice that the table does not list is refused, naming the field."""
    import json

    from kosmos2_app.app_files import MODELS
    from kosmos2_app.masks import sam2_of

    monkeypatch.delenv("KOSMOS2_SAM2", raising=False)
    rows = json.loads(MODELS.read_text())
    pytorch, openvino = rows[0], rows[1]
    assert sam2_of(pytorch, "cuda:0", rows) == "facebook/sam2.1-hiera-large"
    assert sam2_of(pytorch, "cpu", rows) == "facebook/sam2.1-hiera-tiny"
    assert sam2_of(openvino, "cpu", rows) == "facebook/sam2.1-hiera-tiny"
    assert sam2_of({"meta": {"model_name": "fine-tuned"}}, "cuda", rows) == "facebook/sam2.1-hiera-large"
    hostile = {"meta": {"sam2": {"cpu": "https://127.0.0.1/evil"}}}
    with pytest.raises(ValueError, match=r"model_info\.meta\.sam2\.cpu must be one of .*hiera-large"):
        sam2_of(hostile, "cpu", rows)
    with pytest.raises(ValueError, match=r"model_info\.meta\.sam2 must map"):
        sam2_of({"meta": {"sam2": ["facebook/sam2.1-hiera-large"]}}, "cpu", rows)
    for not_a_row in ("not a row", {"meta": "nor this"}):  # the default row's choice
        assert sam2_of(not_a_row, "cpu", rows) == "facebook/sam2.1-hiera-tiny"
    monkeypatch.setenv("KOSMOS2_SAM2", "/weights/my-sam2")
    assert sam2_of(pytorch, "cuda", rows) == sam2_of(hostile, "cpu", rows) == "/weights/my-sam2"


def test_sam2_in_bf16_as_a_gpu_runs_it_segments_as_well_as_float32(segmenter):
    """On a GPU SAM 2 runs under bf16 autocast; here the same autocast on the CPU, on the 48
    unseen scenes of the test above: the masks cover their shapes as well as float32's do (mean
    IoU with the drawn shapes within 0.02 of float32's, and at least 0.85)."""
    half = BoxSegmenter(segmenter.model, "cpu", precision=torch.bfloat16)
    rng = random.Random(4242)
    scenes = [example(rng) for _ in range(48)]
    images, boxes = [image for image, _, _ in scenes], [box[None] for _, _, box in scenes]
    ious = {}
    for name, which in (("fp32", segmenter), ("bf16", half)):
        found = which.segment(images, boxes)
        ious[name] = float(np.mean([_iou(m.mask, m.origin, truth) for [m], (_, truth, _) in zip(found, scenes)]))
    assert ious["bf16"] >= 0.85 and abs(ious["bf16"] - ious["fp32"]) <= 0.02, ious
