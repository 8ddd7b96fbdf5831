"""Masks for boxes: our batched SAM 2 path against one call per box, and what masks add to
Kosmos-2's boxes, in one run, on the real architectures with random weights.

* **ours**: :meth:`~kosmos2_engine.segmentation.BoxSegmenter.segment` on an image with N boxes:
  SAM 2's image encoder once, then the N boxes through the prompt encoder and mask decoder in
  one call (what ``masks: true`` does);
* **one call per box**: the same image segmented N times, one box each (the image encoded
  each time), as an app calling a separate SAM 2 service per box does;
* **boxes alone**: Kosmos-2 (``Kosmos2Config()``, 1.66 B parameters, stop tokens emptied so
  every answer is 4 tokens) grounding N phrases on the same image: the cost masks are added to.

``--propagation`` measures videos instead: a frame the stride skipped, its N objects' masks
carried from the frames before by SAM 2's video memory (:class:`~kosmos2_engine.MaskPropagator`,
after enough frames that the memory is full), against segmenting N boxes on a frame afresh.

SAM 2 is ``Sam2Config()`` (Hiera tiny, 1024 px: the default deploy, ``sam2.1-hiera-tiny``);
``--sam large`` builds Hiera large (``sam2.1-hiera-large``). The image is 1024 x 768; boxes are
seeded. Rounds alternate the paths; medians are reported.

    python -m bench.masks_bench                  # make bench-masks (CPU: ~7 min)
    python -m bench.masks_bench --device cuda --sam large
    python -m bench.masks_bench --propagation --boxes 1 5

Writes ``bench/results/masks-<date>-<device>.json``.
"""

from __future__ import annotations

import argparse
import statistics
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.engine_bench import GROUNDING_TOKENS, random_engine, timed
from bench.live_server import REPO, write_result
from bench.machine import environment
from kosmos2_engine import BoxMask, BoxSegmenter, MaskPropagator, policy_from_settings

# Hiera large as sam2.1-hiera-large configures it; Sam2Config() is Hiera tiny.
HIERA_LARGE = {
    "hidden_size": 144, "num_attention_heads": 2, "blocks_per_stage": [2, 6, 36, 4],
    "embed_dim_per_stage": [144, 288, 576, 1152], "num_attention_heads_per_stage": [2, 4, 8, 16],
    "global_attention_blocks": [23, 33, 43], "window_size_per_stage": [8, 4, 16, 8],
}  # fmt: skip


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def sam2_config(size: str):
    """``Sam2Config`` of Hiera ``tiny`` (the defaults) or ``large``."""
    from transformers import Sam2Config

    if size == "tiny":
        return Sam2Config()
    vision = Sam2Config().vision_config.to_dict()
    vision["backbone_config"].update(HIERA_LARGE)
    vision["backbone_channel_list"] = HIERA_LARGE["embed_dim_per_stage"][::-1]
    return Sam2Config(vision_config=vision)


def random_segmenter(size: str, device: str) -> BoxSegmenter:
    from transformers import Sam2Model

    torch.manual_seed(0)
    return BoxSegmenter(Sam2Model(sam2_config(size)), device)


def seeded_boxes(count: int, width: int, height: int) -> np.ndarray:
    """float32 (count, 4) pixel xyxy boxes inside a ``width`` x ``height`` image."""
    rng = np.random.default_rng(count)
    corners = rng.uniform(0, 1, (count, 2, 2)) * [width, height]
    low, high = corners.min(1), corners.max(1)
    return np.concatenate([low, np.maximum(high, low + 16)], 1).astype(np.float32)


def median_seconds(paths: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each of ``paths`` (name -> function), over ``rounds`` rounds that each
    start one path further along, so that no path always runs first."""
    names = list(paths)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(paths[name]))
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def masks_rows(segmenter: BoxSegmenter, image: np.ndarray, counts: list[int], rounds: int) -> list[dict]:
    """Per box count: ours (one encoding, one decoder call) against one call per box."""
    height, width = image.shape[:2]
    for count in (1, max(counts)):  # warm-up: both ends of the decoder's batch
        segmenter.segment([image], [seeded_boxes(count, width, height)])
    rows = []
    for count in counts:
        boxes = seeded_boxes(count, width, height)
        paths = {
            "ours": lambda boxes=boxes: segmenter.segment([image], [boxes]),
            "per_box": lambda boxes=boxes: [segmenter.segment([image], [box[None]]) for box in boxes],
        }
        medians = median_seconds(paths, rounds)
        ours, per_box = medians["ours"], medians["per_box"]
        log(f"{count} boxes: ours {ours:.3f} s, one call per box {per_box:.3f} s")
        rows.append({"boxes": count, "ours_s": round(ours, 4), "per_box_s": round(per_box, 4),
                     "per_box_over_ours": round(per_box / ours, 2)})  # fmt: skip
    return rows


def kosmos2_grounding_s(device: str, image: np.ndarray, counts: list[int], rounds: int) -> tuple[dict[int, float], str]:
    """Seconds for Kosmos-2 (real architecture) to ground ``count`` phrases on ``image``, and how
    it decoded (``compiled (CUDA graphs)`` or ``eager``). Batches up to the largest count: the
    same compiled batch buckets as the server's default of 64 would run, fewer recorded."""
    engine = random_engine(device, max_batch_size=max(counts))
    seconds = {}
    with mock.patch("kosmos2_engine.engine.stop_token_ids", lambda tokenizer, policy: ()):
        engine.warm_up(checks=False)  # random weights: nothing to check, the kept path to measure
        for count in counts:
            phrases = [f"object number {i}" for i in range(count)]
            policy = policy_from_settings(
                {"task": "phrase_grounding", "max_new_tokens": GROUNDING_TOKENS, "phrases": phrases}
            )
            run = lambda policy=policy: engine.run([image], policy)
            run()
            seconds[count] = statistics.median(timed(run) for _ in range(rounds))
            log(f"Kosmos-2, {count} phrases: {seconds[count]:.3f} s")
    return seconds, engine.decoder_status.describe()


def openvino_encoder(size: str, image: np.ndarray, counts: list[int], rounds: int, out: Path) -> dict:
    """On CPU, per box count: masks with SAM 2's image encoder as OpenVINO IR (fp32 and int8-act,
    exported beside the random weights saved to a temporary folder) against the torch encoder,
    each round in another order; writes ``masks-openvino-<date>-cpu.json``."""
    import tempfile

    report: dict = {"environment": environment("cpu"), "sam2": size, "image": "1024 x 768", "rounds": rounds}
    height, width = image.shape[:2]
    with tempfile.TemporaryDirectory() as folder:
        random_segmenter(size, "cpu").model.save_pretrained(folder)
        segmenters = {"torch": BoxSegmenter.load(folder)}
        segmenters |= {f"openvino-{fmt}": BoxSegmenter.load(folder, openvino=fmt) for fmt in ("fp32", "int8-act")}
        rows = []
        for count in counts:
            boxes = seeded_boxes(count, width, height)
            paths = {
                name: (lambda run=segmenter.segment, boxes=boxes: run([image], [boxes]))
                for name, segmenter in segmenters.items()
            }
            for path in paths.values():  # warm-up
                path()
            medians = median_seconds(paths, rounds)
            log(f"{count} boxes: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in medians.items()))
            row = {"boxes": count, **{f"{name}_s": round(seconds, 4) for name, seconds in medians.items()}}
            row |= {f"{name}_speedup": round(medians["torch"] / seconds, 2) for name, seconds in medians.items()}
            rows.append(row)
    report["rows"] = rows
    write_result(report, out, f"masks-openvino-{datetime.now(UTC).strftime('%Y-%m-%d')}-cpu.json")
    return report


def propagation(size: str, device: str, image: np.ndarray, counts: list[int], rounds: int, out: Path) -> dict:
    """Per object count: a followed frame (SAM 2's video memory, full) against the same boxes
    segmented afresh; writes ``masks-propagation-<date>-<device>.json``."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    report: dict = {"environment": environment(device), "sam2": size, "image": "1024 x 768", "rounds": rounds}
    height, width = image.shape[:2]
    torch.manual_seed(0)
    config = sam2_config(size)
    video = Sam2VideoModel(Sam2VideoConfig(vision_config=config.vision_config.to_dict()))
    propagator, segmenter = MaskPropagator(video, device), random_segmenter(size, device)
    rows = []
    for count in counts:
        boxes = seeded_boxes(count, width, height)
        masks = [
            BoxMask(np.ones((int(y1 - y0), int(x1 - x0)), bool), (int(y0), int(x0)), 1.0) for x0, y0, x1, y1 in boxes
        ]
        followed = propagator.follow(image, masks)
        for _ in range(video.config.num_maskmem):  # the memory filled, as on a long gap
            followed.next(image)
        paths = {
            "followed": lambda f=followed: f.next(image),
            "segmented": lambda b=boxes: segmenter.segment([image], [b]),
        }
        medians = median_seconds(paths, rounds)
        followed_s, segmented_s = medians["followed"], medians["segmented"]
        log(f"{count} objects: followed frame {followed_s:.3f} s, segmented afresh {segmented_s:.3f} s")
        rows.append({"objects": count, "followed_s": round(medians["followed"], 4),
                     "segmented_s": round(medians["segmented"], 4)})  # fmt: skip
    report["rows"] = rows
    write_result(report, out, f"masks-propagation-{datetime.now(UTC).strftime('%Y-%m-%d')}-{device}.json")
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sam", choices=("tiny", "large"), default="tiny")
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--openvino", action="store_true", help="CPU: SAM 2's image encoder in OpenVINO vs torch")
    parser.add_argument("--propagation", action="store_true", help="videos: a followed frame vs one segmented afresh")
    args = parser.parse_args(argv)
    image = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    if args.openvino:
        return openvino_encoder(args.sam, image, args.boxes, args.rounds, args.out)
    if args.propagation:
        return propagation(args.sam, args.device, image, args.boxes, args.rounds, args.out)
    name = f"masks-{datetime.now(UTC).strftime('%Y-%m-%d')}-{args.device}.json"
    report: dict = {"environment": environment(args.device), "sam2": args.sam, "image": "1024 x 768",
                    "rounds": args.rounds, "kosmos2_new_tokens": GROUNDING_TOKENS}  # fmt: skip
    log(f"SAM 2 Hiera {args.sam}, random weights, on {args.device}")
    segmenter = random_segmenter(args.sam, args.device)
    report["sam2_parameters_m"] = round(sum(p.numel() for p in segmenter.model.parameters()) / 1e6, 1)
    rows = masks_rows(segmenter, image, args.boxes, args.rounds)
    del segmenter
    write_result(report | {"partial": "SAM 2 rows only", "rows": rows}, args.out, name)  # kept if stopped
    grounding, report["kosmos2_decoder"] = kosmos2_grounding_s(args.device, image, args.boxes, args.rounds)
    for row in rows:
        boxes_alone = grounding[row["boxes"]]
        row["kosmos2_boxes_s"] = round(boxes_alone, 4)
        row["masks_add"] = f"{100 * row['ours_s'] / boxes_alone:.0f}%"
        row["per_box_would_add"] = f"{100 * row['per_box_s'] / boxes_alone:.0f}%"
    report["rows"] = rows
    write_result(report, args.out, name)
    return report


if __name__ == "__main__":
    main()
