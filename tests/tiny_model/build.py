"""Build the tiny trained Kosmos-2 checkpoint if needed, and print its folder as the last line.

    PYTHONPATH=src:. python -m tests.tiny_model.build   (``make tiny-checkpoint`` asks
    :mod:`tests.tiny_model.locate` first, which remembers this check's answer)

The checkpoint's *key* fingerprints what decides its weights: the code of the architecture,
the scenes and the training loop (its syntax tree, without docstrings, imports, annotations,
comments or layout, so that reformatting changes nothing), the training data itself for 256
scenes (the examples of every task, the engine's prompts and their token layout, the pixels),
and the torch and transformers versions. The committed
folder ``tests/tiny_model/checkpoint`` is used when its key matches; otherwise the model is
trained into ``.cache/tiny-kosmos2/<key>`` (``TINY_KOSMOS2_CACHE`` moves that root): about
40 minutes on one CPU thread, deterministic. A build is checked on held-out scenes and is not
saved unless it has learnt.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import transformers

from kosmos2_engine import GenerationPolicy, Kosmos2Engine

from .architecture import build_model, build_processor
from .locate import REPORT, cache_root, key_of
from .scenes import draw_scene, draw_two_shapes, random_size
from .train import RECIPE, Recipe, make_training_set, train

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COMMITTED = HERE / "checkpoint"
EVAL_SEED = 12345
MINIMUM_SCORES = {
    "name_accuracy": 0.5,
    "box_hit_rate": 0.45,
    "two_shape_caption_accuracy": 0.35,
    "grounding_hit_rate": 0.6,
    "region_accuracy": 0.6,
    "vqa_accuracy": 0.7,
}
_CODE = [HERE / "architecture.py", HERE / "scenes.py", HERE / "train.py"]
_FINGERPRINT_SCENES = 256


class _WithoutLayout(ast.NodeTransformer):
    """Drops what cannot change the weights: docstrings, imports and type annotations."""

    def visit_Import(self, node):
        return None

    visit_ImportFrom = visit_Import

    def _without_docstring(self, node):
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return self.generic_visit(node)

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _without_docstring

    def visit_arg(self, node):
        node.annotation = None
        return node

    def visit_AnnAssign(self, node):
        node.annotation = ast.Constant(None)
        return self.generic_visit(node)


def _code_fingerprint(path: Path) -> bytes:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
    return ast.dump(_WithoutLayout().visit(tree), include_attributes=False).encode()


def _data_fingerprint() -> bytes:
    """The training set of the first 256 scenes, as the recipe makes it: every task's prompts
    (from the engine), targets, token layout and pixels."""
    data = make_training_set(build_processor(), RECIPE.data_seed, _FINGERPRINT_SCENES, RECIPE.two_shape_share)
    return b"".join(getattr(data, field.name).numpy().tobytes() for field in fields(data))


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in _CODE:
        digest.update(_code_fingerprint(path))
    digest.update(_data_fingerprint())
    digest.update(json.dumps(asdict(RECIPE), sort_keys=True).encode())
    digest.update(f"torch={torch.__version__} transformers={transformers.__version__}".encode())
    return digest.hexdigest()[:16]


def ensure_tiny_checkpoint(log=print) -> Path:
    """The folder of the tiny checkpoint: the committed one if current, else a cached build."""
    key = cache_key()
    if key_of(COMMITTED) == key:
        return COMMITTED
    folder = cache_root() / key
    if key_of(folder) == key:
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
    loss = train_and_save(out, RECIPE, log)
    finish_build(out, key, loss, time.monotonic() - started, log)


def train_and_save(out: Path, recipe: Recipe, log) -> float:
    """Train the tiny model by ``recipe`` and save it with its processor into ``out``;
    returns the final training loss."""
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        processor = build_processor()
        model = build_model(processor, recipe.model_seed)
        data = make_training_set(processor, recipe.data_seed, recipe.scenes, recipe.two_shape_share)
        log(
            f"training the tiny Kosmos-2 ({sum(p.numel() for p in model.parameters())} "
            f"parameters) on {len(data)} examples, {recipe.steps} steps"
        )
        loss = train(model, data, recipe.steps, recipe.train_seed, recipe.batch_size, recipe.lr, log)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return loss


def finish_build(out: Path, key: str, loss: float, seconds: float, log) -> None:
    """Check a trained folder on held-out scenes and write its report; raise if it has not
    learnt well enough (the folder is then not used)."""
    report = {
        "key": key,
        "final_loss": round(loss, 4),
        **evaluate(Kosmos2Engine.load(str(out), device="cpu")),
        "recipe": asdict(RECIPE),
        "build_seconds": round(seconds, 1),
    }
    log(f"held-out scenes: {report}")
    failed = {name: report[name] for name, low in MINIMUM_SCORES.items() if report[name] < low}
    if failed:
        raise RuntimeError(f"the tiny model did not learn well enough: {failed}; {report}")
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")


def evaluate(engine: Kosmos2Engine, count: int = 48) -> dict:
    """Shares of held-out scenes each task gets right (see :data:`MINIMUM_SCORES`)."""
    rng = random.Random(EVAL_SEED)
    singles = [draw_scene(rng, *random_size(rng)) for _ in range(count)]
    pairs = [draw_two_shapes(rng, *random_size(rng)) for _ in range(count)]
    return {**_caption_scores(engine, singles, pairs), **_task_scores(engine, rng, pairs)}


def _caption_scores(engine, singles, pairs) -> dict:
    policy = GenerationPolicy(max_new_tokens=40)
    named = hits = 0
    for result, (_, shape) in zip(engine.run([image for image, _ in singles], policy), singles):
        if result.boxes and result.boxes[0].name == shape.phrase:
            named += 1
            hits += iou(result.boxes[0].xyxy, shape.xyxy) >= 0.5
    both = sum(
        [box.name for box in result.boxes] == [s.phrase for s in shapes]
        for result, (_, shapes) in zip(engine.run([image for image, _ in pairs], policy), pairs)
    )
    return {
        "name_accuracy": named / len(singles),
        "box_hit_rate": hits / len(singles),
        "two_shape_caption_accuracy": both / len(pairs),
    }


def _task_scores(engine, rng, pairs) -> dict:
    grounded = described = answered = 0
    for image, shapes in pairs:
        target = rng.choice(shapes)
        phrase = f"the {target.colour} {target.shape}"
        [found] = engine.run([image], GenerationPolicy(task="phrase_grounding", phrases=(phrase,)))
        grounded += bool(found.boxes) and iou(found.boxes[0].xyxy, target.xyxy) >= 0.5
        left, top, right, bottom = target.pixel_ltrb
        region = GenerationPolicy(task="region_description", regions=((left, top, right, bottom),))
        described += engine.run([image], region)[0].descriptions == (f"{target.phrase}.",)
        question = GenerationPolicy(task="vqa", question=f"What colour is the {target.shape}?")
        answered += engine.run([image], question)[0].text.endswith(f"is {target.colour}.")
    return {
        "grounding_hit_rate": grounded / len(pairs),
        "region_accuracy": described / len(pairs),
        "vqa_accuracy": answered / len(pairs),
    }


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
