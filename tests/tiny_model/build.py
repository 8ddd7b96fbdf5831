"""Build the tiny trained Kosmos-2 checkpoint if needed, and print its folder as the last line.

    make tiny-checkpoint      (or: PYTHONPATH=src:. python -m tests.tiny_model.build)

The checkpoint's *key* hashes the sources that decide its weights (architecture, scenes,
training recipe, prompt layout) and the torch and transformers versions. The committed
folder ``tests/tiny_model/checkpoint`` is used when its key matches; otherwise the model is
trained into ``.cache/tiny-kosmos2/<key>`` (``TINY_KOSMOS2_CACHE`` moves that root): about
13 minutes on one CPU thread, deterministic. A build is checked on held-out scenes and is not
saved unless it has learnt.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

from kosmos2_engine import GenerationPolicy, Kosmos2Engine

from .architecture import build_model, build_processor
from .scenes import draw_scene, random_size
from .train import RECIPE, make_training_set, train

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COMMITTED = HERE / "checkpoint"
CACHE_ENV = "TINY_KOSMOS2_CACHE"
REPORT = "build_report.json"
EVAL_SEED, MIN_NAME_ACCURACY, MIN_BOX_HIT_RATE = 12345, 0.8, 0.7
_WEIGHT_SOURCES = [HERE / "architecture.py", HERE / "scenes.py", HERE / "train.py",
                   REPO / "src" / "kosmos2_engine" / "prompts.py"]


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in _WEIGHT_SOURCES:
        digest.update(path.read_bytes())
    digest.update(f"torch={torch.__version__} transformers={transformers.__version__}".encode())
    return digest.hexdigest()[:16]


def _built_with_key(folder: Path, key: str) -> bool:
    report = folder / REPORT
    return report.is_file() and json.loads(report.read_text()).get("key") == key


def ensure_tiny_checkpoint(log=print) -> Path:
    """The folder of the tiny checkpoint: the committed one if current, else a cached build."""
    key = cache_key()
    if _built_with_key(COMMITTED, key):
        return COMMITTED
    folder = Path(os.environ.get(CACHE_ENV, REPO / ".cache" / "tiny-kosmos2")) / key
    if _built_with_key(folder, key):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="building-", dir=folder.parent))
    try:
        _build(staging, key, log)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _build(out: Path, key: str, log) -> None:
    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(RECIPE.threads)
    try:
        processor = build_processor()
        model = build_model(processor, RECIPE.model_seed)
        data = make_training_set(processor, RECIPE.data_seed, RECIPE.scenes)
        log(f"training the tiny Kosmos-2 ({sum(p.numel() for p in model.parameters())} "
            f"parameters) on {len(data)} scenes, {RECIPE.steps} steps")
        loss = train(model, data, RECIPE.steps, RECIPE.train_seed, RECIPE.batch_size, RECIPE.lr, log)
    finally:
        torch.set_num_threads(threads)
    report = {"key": key, "final_loss": round(loss, 4), **evaluate(Kosmos2Engine(model, processor)),
              "recipe": asdict(RECIPE), "build_seconds": round(time.monotonic() - started, 1)}
    log(f"held-out scenes: {report}")
    if report["name_accuracy"] < MIN_NAME_ACCURACY or report["box_hit_rate"] < MIN_BOX_HIT_RATE:
        raise RuntimeError(f"the tiny model did not learn well enough: {report}")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")


def evaluate(engine: Kosmos2Engine, count: int = 64) -> dict:
    """Share of held-out scenes whose first phrase names the shape, and whose box has IoU >= 0.5."""
    rng = random.Random(EVAL_SEED)
    scenes = [draw_scene(rng, *random_size(rng)) for _ in range(count)]
    generations = engine.caption([image for image, _ in scenes], GenerationPolicy(max_new_tokens=24))
    named = hits = 0
    for generation, (_, shape) in zip(generations, scenes):
        phrases = generation.grounded.phrases
        if phrases and phrases[0].phrase == shape.phrase:
            named += 1
            hits += iou(phrases[0].boxes[0].xyxy, shape.xyxy) >= 0.5
    return {"name_accuracy": named / count, "box_hit_rate": hits / count}


def iou(a, b) -> float:
    """Intersection over union of two xyxy boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main() -> int:
    folder = ensure_tiny_checkpoint(log=lambda line: print(line, file=sys.stderr))
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
