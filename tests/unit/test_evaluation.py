"""Evaluation: the metric wrapper on hand-made cases with known answers, ground truth of every
kind, the report, the paper's protocols on hand-made files in their formats, and the tiny model
on a generated labelled project."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kosmos2_jobs.evaluation import cli
from kosmos2_jobs.evaluation.coco_metrics import evaluate_boxes, evaluate_masks, mask_rle, sweep
from kosmos2_jobs.evaluation.ground_truth import read_project_folder
from kosmos2_jobs.evaluation.project import evaluate_project, phrase_map
from kosmos2_jobs.evaluation.protocols import iou, read_flickr30k, read_refer, run_flickr30k, run_refer
from kosmos2_jobs.evaluation.report import write_report
from kosmos2_jobs.evaluation.runners import Detection, EngineRunner
from supervisely_io.images import decode_image
from supervisely_io.sources import read_local
from tests.support.app_harness import TINY_SAM2
from tests.support.evaluation_cases import CLASSES, write_labelled_project

SIZES = [(100, 100)] * 4
TARGETS = [
    [("cat", (10, 10, 49, 49))],
    [("cat", (20, 20, 59, 59))],
    [("dog", (0, 0, 29, 29))],
    [("dog", (50, 50, 89, 89))],
]


def _shifted(box, by):
    top, left, bottom, right = box
    return (top + by, left + by, bottom + by, right + by)


def test_perfect_predictions_give_ap_one():
    detections = [[(name, box, 0.9)] for [(name, box)] in TARGETS]
    metrics = evaluate_boxes(SIZES, TARGETS, detections, ["cat", "dog"])
    assert (metrics.ap, metrics.ap50, metrics.ap75) == pytest.approx((1.0, 1.0, 1.0))
    assert metrics.per_class_ap == {"cat": pytest.approx((1.0, 1.0, 1.0)), "dog": pytest.approx((1.0, 1.0, 1.0))}
    assert metrics.overall.best == (0.9, 1.0) and metrics.recommended_threshold == 0.9


def test_boxes_shifted_past_iou_half_give_ap50_zero():
    # a 40-pixel box moved by 20 pixels each way overlaps 20x20 of 40x40: IoU 400 / 2800 = 0.14
    detections = [[(name, _shifted(box, 20), 0.9)] for [(name, box)] in TARGETS]
    metrics = evaluate_boxes(SIZES, TARGETS, detections, ["cat", "dog"])
    assert metrics.ap50 == 0.0 and metrics.ap == 0.0
    assert metrics.overall.at(0.0) == (0.0, 0.0, 0.0)


def test_one_false_positive_at_a_high_score_lowers_precision_by_one_in_five():
    detections = [[(name, box, 0.5)] for [(name, box)] in TARGETS]
    clean = evaluate_boxes(SIZES, TARGETS, detections, ["cat", "dog"])
    detections[0].append(("dog", (60, 60, 99, 99), 0.95))  # no dog in image 0
    noisy = evaluate_boxes(SIZES, TARGETS, detections, ["cat", "dog"])
    assert clean.overall.at(0.5) == (1.0, 1.0, 1.0)
    assert noisy.overall.at(0.5)[:2] == (pytest.approx(4 / 5), 1.0)
    assert noisy.overall.at(0.95) == (0.0, 0.0, 0.0)  # only the false one is kept
    assert noisy.per_class["cat"].at(0.5) == (1.0, 1.0, 1.0)
    assert noisy.per_class["dog"].at(0.5)[0] == pytest.approx(2 / 3)
    assert noisy.matched[0] == [True, False]


def test_the_recommended_threshold_is_where_f1_is_highest():
    rng = np.random.default_rng(3)
    targets = [[("cat", (10, 10, 49, 49))] for _ in range(30)]
    detections = []
    for _ in range(30):
        hit = rng.random() < 0.7
        box = (10, 10, 49, 49) if hit else (60, 60, 99, 99)
        detections.append([("cat", box, round(float(rng.uniform(0.3, 1.0) if hit else rng.uniform(0, 0.7)), 4))])
    metrics = evaluate_boxes([(100, 100)] * 30, targets, detections, ["cat"])
    flat = [(d[0][2], d[0][1] == (10, 10, 49, 49)) for d in detections]

    def f1_at(t):  # by hand: one target and one box per image
        tp = sum(hit for s, hit in flat if s >= t)
        kept = sum(s >= t for s, _ in flat)
        precision, recall = tp / kept, tp / 30
        return 2 * precision * recall / (precision + recall) if tp else 0.0

    best = max(sorted({s for s, _ in flat}, reverse=True), key=f1_at)
    assert metrics.recommended_threshold == best
    assert metrics.overall.best[1] == pytest.approx(f1_at(best))
    assert all(metrics.overall.at(t)[2] == pytest.approx(f1_at(t)) for t, _ in flat)


def test_a_sweep_counts_ties_together():
    result = sweep([0.5, 0.5, 0.9], [True, False, True], targets=4)
    assert result.thresholds == [0.9, 0.5]
    assert result.precision == [1.0, pytest.approx(2 / 3)] and result.recall == [0.25, 0.5]


def test_no_detection_at_all_is_measured_not_a_crash():
    metrics = evaluate_boxes(SIZES, TARGETS, [[] for _ in SIZES], ["cat", "dog"])
    assert (metrics.ap, metrics.ap50) == (0.0, 0.0) and metrics.overall.best == (1.0, 0.0)


def test_ground_truth_of_every_kind_is_read_and_counted(tmp_path):
    root, drawn = write_labelled_project(tmp_path / "p", 4, odd_cases=True)
    truth = read_project_folder(root)
    assert truth.classes == CLASSES and dict(truth.left_out_labels) == {"point: no area": 1}
    by_name = {image.item.name: image for image in truth.images}
    for name, _, shapes in drawn:  # polygons (scene 0) and bitmaps (scene 1) by their bounding box
        expected = {(s.shape, (s.pixel_ltrb[1], s.pixel_ltrb[0], s.pixel_ltrb[3], s.pixel_ltrb[2])) for s in shapes}
        assert set(by_name[name].boxes) == expected, name
    assert by_name["empty.png"].boxes == () and "broken.png" in by_name  # unreadable only when read
    with pytest.raises(ValueError, match="not classes with an area"):
        read_project_folder(root, ["circle", "unicorn"])


class ScriptedRunner:
    """Answers with boxes given in advance, per image in order; records what it was asked."""

    def __init__(self, answers):
        self.answers, self.asked = list(answers), []

    def detections(self, images, settings):
        self.asked.append((len(images), dict(settings)))
        return [self.answers.pop(0) for _ in images]


def _reader(image):
    return decode_image(read_local(image.item, 1 << 20), 10**8)


def test_a_project_is_evaluated_in_one_run_per_batch_with_every_phrase(tmp_path):
    root, drawn = write_labelled_project(tmp_path / "p", 4, odd_cases=True)
    truth = read_project_folder(root)
    readable = [image for image in truth.images if image.item.name != "broken.png"]
    answers = [[Detection(f"a {c}", box, 0.8) for c, box in image.boxes] for image in readable]
    answers[0].append(Detection("a square", (0, 0, 9, 9), 0.9))  # the first readable image has no square
    runner = ScriptedRunner(answers)
    phrases = {name: f"a {name}" for name in CLASSES}
    evaluation = evaluate_project(truth, runner, _reader, phrases, batch_size=3)
    assert [n for n, _ in runner.asked] == [2, 3]  # broken.png (read first) is left out of the first batch
    assert runner.asked[0][1] == {"task": "phrase_grounding", "phrases": ["a circle", "a square", "a triangle"],
                                  "confidence_threshold": 0.0}  # fmt: skip
    assert [u["image"] for u in evaluation.unreadable] == ["shapes/broken.png"]
    ap50 = {name: evaluation.metrics.per_class_ap[name][1] for name in CLASSES}
    assert ap50["circle"] == pytest.approx(1.0) and ap50["triangle"] == pytest.approx(1.0)
    assert ap50["square"] < 0.9  # the false square scored above the true ones
    without_square = sum(all(c != "square" for c, _ in image.boxes) for image in evaluation.images)
    assert evaluation.absent_rate(0.85)["square"] == (1, without_square)
    assert evaluation.absent_rate(0.95)["square"] == (0, without_square)
    with pytest.raises(ValueError, match="same phrase"):
        phrase_map(CLASSES, {"circle": "a shape", "square": "a shape"})
    with pytest.raises(ValueError, match="not evaluated"):
        phrase_map(CLASSES, {"unicorn": "a unicorn"})


def test_the_report_and_its_pictures_are_written(tmp_path):
    root, _ = write_labelled_project(tmp_path / "p", 6)
    truth = read_project_folder(root)
    answers = [[Detection(c, box, 0.5 + 0.05 * i) for c, box in image.boxes] for i, image in enumerate(truth.images)]
    answers[1] = [Detection("circle", (0, 0, 5, 5), 0.99)]  # a miss, and a false box
    evaluation = evaluate_project(truth, ScriptedRunner(answers), _reader)
    report = write_report(evaluation, tmp_path / "report", "shapes", _reader, "a script")
    text = report.read_text()
    assert "Recommended `confidence_threshold`" in text and "| circle | circle |" in text
    pictures = [tmp_path / "report" / name for name in ("pr_curves.png", "per_class_ap.png", "f1_threshold.png")]
    pictures += sorted((tmp_path / "report" / "examples").glob("*.png"))
    assert {p.name.split("_")[0] for p in pictures[3:]} == {"found", "missed"}
    for picture in pictures:
        assert f"]({picture.relative_to(tmp_path / 'report').as_posix()})" in text
        pixels = np.asarray(Image.open(picture).convert("RGB"))
        assert pixels.size and pixels.std() > 5, picture  # not blank


def test_the_report_writes_anyones_text_as_text():
    from kosmos2_jobs.evaluation.report import escaped

    hostile = "a|b <img src=x onerror=alert(1)> *x* [link](http://x) `code` \\ new\nline"
    assert escaped(hostile) == (
        "a\\|b \\<img src=x onerror=alert(1)\\> \\*x\\* \\[link\\](http://x) \\`code\\` \\\\ new line"
    )
    assert escaped("eval-samples/shapes-project") == "eval-samples/shapes-project"


def _refer_files(folder: Path) -> tuple[Path, Path]:
    """Refer-toolkit files for three expressions on two images; boxes as COCO [x, y, w, h]."""
    refs = [
        {"ref_id": 1, "ann_id": 11, "image_id": 1, "split": "val", "sentences": [{"sent": "the left one"},
                                                                                  {"sent": "left thing"}]},
        {"ref_id": 2, "ann_id": 12, "image_id": 2, "split": "val", "sentences": [{"sent": "the big one"}]},
        {"ref_id": 3, "ann_id": 12, "image_id": 2, "split": "train", "sentences": [{"sent": "not asked"}]},
    ]  # fmt: skip
    instances = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [{"id": 11, "bbox": [10, 10, 40, 40]}, {"id": 12, "bbox": [0, 0, 50, 50]}],
    }
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (folder / "instances.json").write_text(json.dumps(instances))
    return folder / "refs(unc).p", folder / "instances.json"


def test_referring_expressions_accuracy_at_half_iou(tmp_path):
    refs, instances = _refer_files(tmp_path)
    cases = read_refer(refs, instances, "val")
    assert [c.text for c in cases] == ["the left one", "left thing", "the big one"]
    answers = [
        [Detection("x", (10, 10, 49, 49), 0.9)],  # exact: right
        [Detection("x", (30, 30, 69, 69), 0.9)],  # IoU 400/2800: wrong
        [Detection("x", (0, 0, 39, 49), 0.9), Detection("y", (60, 60, 70, 70), 0.1)],  # IoU 0.8: right
    ]
    runner = ScriptedRunner(answers)
    result = run_refer(cases, runner, lambda name: np.zeros((100, 100, 3), np.uint8), "RefCOCO val")
    assert (result.cases, result.right, result.accuracy) == (3, 2, pytest.approx(2 / 3))
    assert runner.asked[0][1] == {"task": "referring_expression", "expression": "the left one", "top_k": 1}


def test_a_refs_file_that_asks_for_code_is_refused(tmp_path):
    refs, instances = _refer_files(tmp_path)
    refs.write_bytes(pickle.dumps([Path("x")]))  # any class at all, not just os.system
    with pytest.raises(pickle.UnpicklingError, match="only plain data"):
        read_refer(refs, instances, "val")


def test_flickr30k_recall_at_one_over_phrases_with_boxes(tmp_path):
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Sentences" / "7.txt").write_text(
        "[/EN#1/people A man] holds [/EN#2/animals a dog] in [/EN#3/scene the park] .\n"
        "[/EN#1/people The man] smiles at [/EN#4/notvisual nobody] .\n"
    )
    (tmp_path / "Annotations" / "7.xml").write_text(
        "<annotation><filename>7.jpg</filename><size><width>100</width><height>100</height></size>"
        "<object><name>1</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>39</xmax><ymax>79</ymax></bndbox></object>"
        "<object><name>2</name><bndbox><xmin>50</xmin><ymin>50</ymin><xmax>69</xmax><ymax>69</ymax></bndbox></object>"
        "<object><name>2</name><bndbox><xmin>80</xmin><ymin>80</ymin><xmax>99</xmax><ymax>99</ymax></bndbox></object>"
        "<object><name>3</name><nobndbox>1</nobndbox></object></annotation>"
    )
    cases = read_flickr30k(tmp_path, ["7"])
    assert [(c.text, len(c.targets)) for c in cases] == [("A man", 1), ("a dog", 2), ("The man", 1)]
    answer = [Detection("A man", (0, 0, 79, 39), 0.9),  # right
              Detection("a dog", (80, 80, 99, 99), 0.7), Detection("a dog", (0, 0, 9, 9), 0.2),  # best is right
              Detection("The man", (50, 50, 99, 99), 0.8)]  # fmt: skip
    runner = ScriptedRunner([answer])
    result = run_flickr30k(cases, runner, lambda name: np.zeros((100, 100, 3), np.uint8))
    assert (result.cases, result.right) == (3, 2)
    assert runner.asked == [(1, {"task": "phrase_grounding", "phrases": ["A man", "a dog", "The man"]})]


def test_iou_of_coco_boxes():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0


def test_the_command_names_what_is_wrong(tmp_path, capsys, tiny_checkpoint):
    root, _ = write_labelled_project(tmp_path / "p", 2)
    base = ["project", str(root), "--out", str(tmp_path / "r"), "--checkpoint", tiny_checkpoint]
    assert cli.main([*base, "--classes", "circle,unicorn"]) == 2
    assert "unicorn" in capsys.readouterr().err
    assert cli.main([*base, "--phrases", "[1, 2]"]) == 2
    assert "--phrases must map" in capsys.readouterr().err
    assert cli.main(["project", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no meta.json" in capsys.readouterr().err
    assert cli.main([*base, "--masks"]) == 2  # rectangles only: no mask to measure against
    assert "--masks: the project has no polygon or bitmap target" in capsys.readouterr().err


def test_the_report_goes_to_the_teams_files(tmp_path, monkeypatch):
    uploaded = []

    class Files:
        def upload_directory(self, team, local, remote):
            uploaded.append((team, local, remote))
            return remote + "/"

    monkeypatch.setenv("TEAM_ID", "8")
    api = type("Api", (), {"file": Files()})()
    assert cli.upload_report(tmp_path, "/kosmos2/eval", api) == "/kosmos2/eval/"
    assert uploaded == [(8, str(tmp_path), "/kosmos2/eval")]
    monkeypatch.delenv("TEAM_ID")
    with pytest.raises(ValueError, match="TEAM_ID"):
        cli.upload_report(tmp_path, "/kosmos2/eval", api)


def test_the_tiny_model_measures_what_its_boxes_are(tmp_path, tiny_checkpoint):
    """The AP50 and per-class recall of the tiny model on 24 generated scenes agree with counting
    its boxes by hand: a target is found when the box named by its class (one per phrase, as
    the model grounds each phrase once) has IoU >= 0.5 with it. Exactly, since both read the same
    detections: what this checks is the wrapper's matching, on a real model's output."""
    root, _ = write_labelled_project(tmp_path / "p", 24)
    truth = read_project_folder(root)
    evaluation = evaluate_project(truth, EngineRunner(tiny_checkpoint), _reader, batch_size=6)
    from kosmos2_jobs.evaluation.coco_metrics import coco_box

    for name in CLASSES:
        hits = targets = 0
        for image, found in zip(evaluation.images, evaluation.detections):
            for cls, box in image.boxes:
                if cls == name:
                    targets += 1
                    hits += any(c == name and iou(coco_box(b), coco_box(box)) >= 0.5 for c, b, _ in found)
        assert evaluation.metrics.per_class[name].at(0.0)[1] == pytest.approx(hits / targets), name
    assert 0 < evaluation.metrics.ap50 < 1
    # Against the rate measured when the model was built (75 % of "the {colour} {shape}" boxed on 48
    # held-out scenes): about 40 targets here give a binomial spread of 0.07, and bare class names
    # are not the phrases it was measured on, so within 0.2.
    measured = json.loads((Path(tiny_checkpoint) / "build_report.json").read_text())["grounding_hit_rate"]
    assert abs(evaluation.metrics.overall.at(0.0)[1] - measured) <= 0.2


def _disc(size: tuple[int, int], radius: int) -> np.ndarray:
    rows, cols = np.ogrid[: size[0], : size[1]]
    return (rows - size[0] // 2) ** 2 + (cols - size[1] // 2) ** 2 <= radius**2


def test_mask_ap_compares_masks_and_a_box_without_a_mask_as_its_filled_box():
    """A disc's mask against itself: AP 1. Its filled bounding box (IoU about pi/4) passes
    COCO's IoU thresholds 0.50..0.95 up to that IoU, and AP is the share it passes. Rectangle
    targets against box detections, none with a mask: the box APs."""
    size = (100, 120)
    disc = _disc(size, 30)
    rows, cols = np.nonzero(disc)
    box = (int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max()))
    targets, target_masks = [[("ball", box)]], [[mask_rle(disc, (0, 0), size)]]
    same = evaluate_masks([size], targets, target_masks, [[("ball", box, 0.9)]], target_masks, ["ball"])
    assert (same.ap, same.ap50, same.ap75) == pytest.approx((1.0, 1.0, 1.0))
    as_box = evaluate_masks([size], targets, target_masks, [[("ball", box, 0.9)]], [[None]], ["ball"])
    overlap = disc.sum() / ((box[2] - box[0] + 1) * (box[3] - box[1] + 1))
    passed = sum(threshold <= overlap for threshold in np.linspace(0.5, 0.95, 10))
    assert 0.75 < overlap < 0.8 and as_box.ap == pytest.approx(passed / 10) and passed == 6
    detections = [[(name, _shifted(box, 3), 0.9)] for [(name, box)] in TARGETS]
    boxes = evaluate_boxes(SIZES, TARGETS, detections, ["cat", "dog"])
    unmasked = [[None]] * len(TARGETS)
    filled = evaluate_masks(SIZES, TARGETS, unmasked, detections, unmasked, ["cat", "dog"])
    assert (filled.ap, filled.ap50, filled.ap75) == pytest.approx((boxes.ap, boxes.ap50, boxes.ap75))
    assert 0 < boxes.ap < 1


def test_a_mask_is_placed_at_its_origin_and_cut_to_the_image():
    from pycocotools import mask as coco_mask

    whole = coco_mask.decode(mask_rle(np.ones((10, 10), bool), (95, 2), (100, 50)))
    assert whole.shape == (100, 50) and whole.sum() == 5 * 10 and whole[95:, 2:12].all()


def test_the_tiny_sam2_masks_measure_better_than_their_boxes_on_shape_masks(
    tmp_path, tiny_checkpoint, monkeypatch, capsys
):
    """Targets are the shapes' own pixels: SAM 2's masks of the tiny model's boxes get a higher
    mask AP than the same boxes filled (circles and triangles fill about 79 % and 50 % of
    their boxes). The command prints the mask AP and the report has it."""
    root, drawn = write_labelled_project(tmp_path / "p", 12, mask_targets=True)
    with pytest.raises(ValueError, match="--masks"):  # read without its masks
        evaluate_project(read_project_folder(root), ScriptedRunner([]), _reader, masks=True)
    truth = read_project_folder(root, with_masks=True)
    assert truth.mask_targets == sum(len(shapes) for _, _, shapes in drawn)
    runner = EngineRunner(tiny_checkpoint, sam2=str(TINY_SAM2))
    evaluation = evaluate_project(truth, runner, _reader, batch_size=6, masks=True)
    found = sum(len(d) for d in evaluation.detections)
    assert found and sum(rle is not None for d in evaluation.detection_masks for rle in d) == found
    filled = evaluate_masks(
        [(image.height, image.width) for image in evaluation.images],
        [list(image.boxes) for image in evaluation.images],
        [list(image.masks) for image in evaluation.images],
        evaluation.detections,
        [[None] * len(d) for d in evaluation.detections],
        CLASSES,
    )
    masks = evaluation.mask_metrics
    assert masks.ap > filled.ap + 0.1 and masks.per_class_ap["circle"][0] > filled.per_class_ap["circle"][0]

    monkeypatch.setenv("KOSMOS2_SAM2", str(TINY_SAM2))
    out = tmp_path / "report"
    argv = ["project", str(root), "--out", str(out), "--checkpoint", tiny_checkpoint, "--device", "cpu"]
    assert cli.main([*argv, "--batch-size", "6", "--masks"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        f"Mask AP {masks.ap:.3f}, AP50 {masks.ap50:.3f}, AP75 {masks.ap75:.3f} ({truth.mask_targets} polygon and "
        "bitmap targets)"
    )
    assert f"**Mask AP {masks.ap:.3f}" in (out / "report.md").read_text()


def test_a_project_on_supervisely_is_read_and_evaluated_by_id(tmp_path):
    import supervisely as sly

    from kosmos2_jobs.evaluation.ground_truth import read_remote
    from tests.support.app_harness import png_bytes
    from tests.support.fake_supervisely import FakeSupervisely

    root, drawn = write_labelled_project(tmp_path / "p", 3)
    meta = sly.ProjectMeta.from_json(json.loads((root / "meta.json").read_text()))
    images = {11: [(100 + i, name, png_bytes(image)) for i, (name, image, _) in enumerate(drawn)]}
    api = FakeSupervisely(1, {11: ("shapes", None)}, images, meta)
    for i, (name, _, _) in enumerate(drawn):
        api.annotations[100 + i] = json.loads((root / "shapes" / "ann" / f"{name}.json").read_text())
    truth = read_remote(api, "dataset", 11)
    assert truth.classes == CLASSES and [image.item.image_id for image in truth.images] == [100, 101, 102]
    assert truth.images == [
        dataclasses.replace(local, item=remote.item)
        for local, remote in zip(read_project_folder(root).images, truth.images)
    ]
    read = cli.image_reader(10**8, api)
    answers = [[Detection(c, box, 0.9) for c, box in image.boxes] for image in truth.images]
    evaluation = evaluate_project(truth, ScriptedRunner(answers), read)
    assert evaluation.metrics.ap50 == pytest.approx(1.0) and read(truth.images[0]).shape == drawn[0][1].shape


def test_phrases_come_from_text_or_a_file_and_a_wrong_one_names_the_option(tmp_path, capsys):
    path = tmp_path / "phrases.yaml"
    path.write_text("circle: a round shape\n")
    assert cli.mapping_of(str(path)) == {"circle": "a round shape"}
    assert cli.mapping_of('{"square": "a box"}') == {"square": "a box"}
    for text, message in (("[1, 2", "neither JSON nor YAML"), ("[a, b]", "must map class names to phrases"),
                          ('{"circle": 3}', "must map class names to phrases")):  # fmt: skip
        argv = ["project", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--phrases", text]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "--phrases" in err and message in err, err
