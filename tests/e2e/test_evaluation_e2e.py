"""Evaluation end to end: the engine in this process and the real server through ModelAPI give
identical numbers; the command writes its report against the server."""

from __future__ import annotations

import subprocess
import sys

from kosmos2_jobs.evaluation.ground_truth import read_project_folder
from kosmos2_jobs.evaluation.project import evaluate_project
from kosmos2_jobs.evaluation.runners import EngineRunner, ServerRunner
from supervisely_io.images import decode_image
from supervisely_io.sources import read_local
from tests.support.app_harness import REPO, TINY_SAM2
from tests.support.evaluation_cases import write_labelled_project


def _reader(image):
    return decode_image(read_local(image.item, 1 << 20), 10**8)


def test_the_engine_and_the_server_give_identical_numbers(live_server, tmp_path, tiny_checkpoint):
    root, _ = write_labelled_project(tmp_path / "p", 16, odd_cases=True)
    truth = read_project_folder(root)
    local = evaluate_project(truth, EngineRunner(tiny_checkpoint), _reader, batch_size=4)
    served = evaluate_project(truth, ServerRunner(live_server), _reader, batch_size=4)
    assert served.detections == local.detections and len(local.detections) == 17
    for name in ("ap", "ap50", "ap75", "per_class_ap", "recommended_threshold"):
        assert getattr(served.metrics, name) == getattr(local.metrics, name), name
    assert served.absent_rate(local.metrics.recommended_threshold) == local.absent_rate(
        local.metrics.recommended_threshold
    )

    out = tmp_path / "report"
    command = [sys.executable, "src/evaluate.py", "project", str(root), "--server", live_server, "--out", str(out),
               "--batch-size", "4"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = local.metrics
    assert result.stdout.splitlines()[0] == (
        f"AP {metrics.ap:.3f}, AP50 {metrics.ap50:.3f}, AP75 {metrics.ap75:.3f} on 17 images; "
        f"recommended confidence_threshold {metrics.recommended_threshold:.4g}"
    )
    assert (out / "report.md").is_file() and "shapes/broken.png" in (out / "report.md").read_text()


def test_mask_ap_of_the_server_and_of_the_engine_are_identical(live_server, tmp_path, tiny_checkpoint):
    """With masks: the server's bitmaps (``masks`` with ``keep_boxes``, through ``Session``) are
    the engine runner's SAM 2 masks, pixel for pixel."""
    root, _ = write_labelled_project(tmp_path / "p", 6, mask_targets=True)
    truth = read_project_folder(root, with_masks=True)
    engine = EngineRunner(tiny_checkpoint, sam2=str(TINY_SAM2))
    local = evaluate_project(truth, engine, _reader, batch_size=3, masks=True)
    served = evaluate_project(truth, ServerRunner(live_server), _reader, batch_size=3, masks=True)
    assert served.detections == local.detections and served.detection_masks == local.detection_masks
    assert any(rle is not None for found in local.detection_masks for rle in found)
    assert served.mask_metrics.per_class_ap == local.mask_metrics.per_class_ap
