"""Frames per second: a video's frames through the video path against the same frames sent as
images, side by side in one run, on the tiny model and on the real architecture.

* **video path**: the app's :class:`~kosmos2_app.video.frames.FrameReader` reads and decodes
  the MPEG-4 clip in its thread, a batch ahead, each frame squashed to the model's input at
  once, and batches go to the engine's :class:`~kosmos2_engine.RequestBatcher` with the next one
  queued behind (as :func:`kosmos2_app.video.job.run_video` does);
* **image path**: the same frames as PNG files, a batch per request as ``/inference_batch``
  takes them: decoded (:func:`supervisely_io.images.decode_image`), squashed, then run, one
  batch after the other.

Both run phrase grounding of one class (``square``) on 640 x 480 frames of a moving square, in
batches of 16; rounds alternate the two paths and medians are reported. The real architecture
(``Kosmos2Config()``, random weights, 1.66 B parameters) has its stop tokens emptied, so every
answer is ``--new-tokens`` long: the cost of the real model.

    python -m bench.video_bench                # make bench-video (CPU: ~6 min)
    python -m bench.video_bench --only tiny

Writes ``bench/results/video-<date>-<device>.json``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from bench.engine_bench import random_engine
from bench.live_server import REPO, write_result
from bench.machine import environment
from kosmos2_app.video.frames import FrameReader
from kosmos2_engine import Kosmos2Engine, RequestBatcher, policy_from_settings, shrink
from supervisely_io.images import decode_image
from tests.support.videos import moving_square_frames, write_video

BATCH = 16


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def video_path(batcher: RequestBatcher, clip: Path, count: int, policy, side: int) -> float:
    """Seconds to run ``count`` frames of ``clip`` through the video path."""
    batches = [list(range(start, min(start + BATCH, count))) for start in range(0, count, BATCH)]
    started = time.perf_counter()
    in_flight: deque = deque()
    with FrameReader(str(clip), batches, side, keep_whole=False) as reader:
        for frames in reader:
            in_flight.append(batcher.submit(frames.views, policy))
            if len(in_flight) >= 2:
                in_flight.popleft().result()
        while in_flight:
            in_flight.popleft().result()
    return time.perf_counter() - started


def image_path(batcher: RequestBatcher, pngs: list[bytes], policy, side: int) -> float:
    """Seconds to run the frames as PNG images, a batch per request, decoded then run."""
    started = time.perf_counter()
    for start in range(0, len(pngs), BATCH):
        views = [shrink(decode_image(data, 10**8), side) for data in pngs[start : start + BATCH]]
        batcher.submit(views, policy).result()
    return time.perf_counter() - started


def compare(name: str, engine: Kosmos2Engine, frames: list[np.ndarray], clip: Path, rounds: int, tokens: int) -> dict:
    policy = policy_from_settings({"task": "phrase_grounding", "phrases": "square", "max_new_tokens": tokens})
    pngs = []
    for frame in frames:
        data = io.BytesIO()
        Image.fromarray(frame).save(data, format="PNG")
        pngs.append(data.getvalue())
    batcher = RequestBatcher(engine)
    try:
        batcher.call(engine.warm_up, name == "tiny")  # checks: none on random weights
        side = engine.image_size
        times: dict[str, list[float]] = {"video": [], "image": []}
        for index in range(rounds):
            for path in ("video", "image") if index % 2 == 0 else ("image", "video"):
                seconds = (
                    video_path(batcher, clip, len(frames), policy, side)
                    if path == "video"
                    else image_path(batcher, pngs, policy, side)
                )
                times[path].append(seconds)
                log(f"{name} {path}: {len(frames) / seconds:.2f} frames/s")
    finally:
        batcher.close()
    video_fps = len(frames) / statistics.median(times["video"])
    image_fps = len(frames) / statistics.median(times["image"])
    return {
        "frames": len(frames), "rounds": rounds, "new_tokens": tokens,
        "video_frames_per_s": round(video_fps, 2), "image_frames_per_s": round(image_fps, 2),
        "video_over_image": round(video_fps / image_fps, 3), "decoder": engine.decoder_status.describe(),
        "video_s": [round(t, 3) for t in times["video"]], "image_s": [round(t, 3) for t in times["image"]],
    }  # fmt: skip


def tiny_engine(device: str) -> Kosmos2Engine:
    from tests.tiny_model.locate import tiny_checkpoint_folder

    return Kosmos2Engine.load(str(tiny_checkpoint_folder()), device=device)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=("tiny", "real"))
    parser.add_argument("--tiny-frames", type=int, default=96)
    parser.add_argument("--real-frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=4, help="answer length on the real architecture")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    report: dict = {"environment": environment(args.device), "batch": BATCH}
    with tempfile.TemporaryDirectory() as folder:
        for name, count in (("tiny", args.tiny_frames), ("real", args.real_frames)):
            if args.only not in (None, name):
                continue
            frames = moving_square_frames(count, 640, 480)
            clip = write_video(Path(folder) / f"{name}.mp4", frames)
            log(f"{name}: {count} frames of 640 x 480")
            engine = tiny_engine(args.device) if name == "tiny" else random_engine(args.device, BATCH)
            if name == "real":  # every answer --new-tokens long: the real model's cost
                with mock.patch("kosmos2_engine.engine.stop_token_ids", lambda tokenizer, policy: ()):
                    report[name] = compare(name, engine, frames, clip, args.rounds, args.new_tokens)
            else:
                report[name] = compare(name, engine, frames, clip, args.rounds, 64)
            del engine
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    write_result(report, args.out, f"video-{stamp}-{args.device}.json")
    return report


if __name__ == "__main__":
    main()
