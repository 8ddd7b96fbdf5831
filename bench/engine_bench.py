"""Engine benchmark: the reference path against our engine, in one run, on the real Kosmos-2
architecture (``Kosmos2Config()`` defaults, 1.66 B parameters) with random weights.

* reference: transformers' ``generate`` in fp32, one image and one prompt per call, pixels in,
  the way the public app calls it;
* engine: ``Kosmos2Engine.run`` (bf16 on GPU, fp32 on CPU; static-cache decoder, compiled on
  GPU), batched; and many single-image requests through the cross-request batcher.

Output lengths are forced: the reference gets ``min_new_tokens == max_new_tokens``; the engine's
stop tokens are emptied (EOS suppressed). Prompts are tokenised with the tiny checkpoint's
tokenizer (ids differ from the real vocabulary, lengths and costs do not). Captions are 64
tokens; a phrase-grounding answer is 4 tokens (``<object>`` two corners ``</object>``).

    python -m bench.engine_bench --device cpu --quick     # small counts, a few minutes on 2 cores
    python -m bench.engine_bench --device cuda            # the full set

Writes ``bench/results/<date>-<device>.json`` and ``.md`` and prints the summary.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.machine import bandwidth_share, environment, peak_memory_mib, reset_peak_memory, synchronize
from bench.report import write_partial, write_report
from kosmos2_engine import Kosmos2Engine, RequestBatcher, policy_from_settings
from kosmos2_engine.runtime.torch.backend import TorchBackend
from kosmos2_engine.tasks import CAPTION_PROMPT

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = REPO / "tests" / "tiny_model" / "checkpoint"
GROUNDING_TOKENS = 4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small counts (CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    full = not args.quick
    args.new_tokens = 64 if full else 16
    args.batches = [1, 8, 16, 32, 64] if full else [1, 4]
    args.phrases = [1, 5, 20] if full else [1, 5]
    args.reference_images = 8 if full else 2
    args.clients = 32 if full else 4
    args.repeats = 5 if full else 2
    return args


def random_model(device: str, dtype: torch.dtype):
    """Kosmos-2 at its real size with seeded random weights, built on ``device`` in ``dtype``."""
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(device):
        model = Kosmos2ForConditionalGeneration(Kosmos2Config())
    return model.to(dtype).eval()


def real_size_processor():
    """The tiny checkpoint's processor (Kosmos-2's tokenizer) set to the real model's 224 px input."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(TOKENIZER_DIR)
    processor.image_processor.size = {"height": 224, "width": 224}
    processor.image_processor.crop_size = {"height": 224, "width": 224}
    return processor


def random_engine(device: str, max_batch_size: int) -> Kosmos2Engine:
    """Our engine on :func:`random_model` (bf16 on CUDA, fp32 on CPU)."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = random_model(device, dtype)
    processor = real_size_processor()
    return Kosmos2Engine(TorchBackend(model, device), processor, model.config, max_batch_size=max_batch_size)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(fn) -> float:
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def summary(latencies: list[float], images_per_call: int) -> dict:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    return {"p50_s": median, "p95_s": p95, "images_per_s": images_per_call / median, "calls": len(ordered)}


def bench_reference(model, processor, images, new_tokens: int) -> dict:
    """HF generate, fp32, one image per call, pixels in (vision tower included)."""

    def one(image):
        inputs = processor(images=image, text=CAPTION_PROMPT, return_tensors="pt").to(model.device)
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        assert out.shape[1] - inputs["input_ids"].shape[1] == new_tokens

    one(images[0])  # warm-up
    reset_peak_memory()
    result = summary([timed(lambda image=image: one(image)) for image in images], 1)
    return {**result, "peak_memory_mib": peak_memory_mib()}


def bench_batches(engine, images, batches, new_tokens, repeats) -> list[dict]:
    policy = policy_from_settings({"task": "caption", "max_new_tokens": new_tokens})
    rows = []
    for batch in batches:
        chunk = images[:batch]
        engine.run(chunk, policy)  # warm-up (graphs for this bucket are already recorded)
        reset_peak_memory()
        latencies = [timed(lambda chunk=chunk: engine.run(chunk, policy)) for _ in range(repeats)]
        rows.append({"batch": batch, **summary(latencies, batch), "peak_memory_mib": peak_memory_mib()})
    return rows


def bench_phrases(engine, image, phrase_counts, repeats) -> list[dict]:
    rows = []
    for count in phrase_counts:
        policy = policy_from_settings(
            {
                "task": "phrase_grounding",
                "max_new_tokens": GROUNDING_TOKENS,
                "phrases": [f"object number {i}" for i in range(count)],
            }
        )
        engine.run([image], policy)
        latencies = [timed(lambda policy=policy: engine.run([image], policy)) for _ in range(repeats)]
        rows.append({"phrases": count, "p50_s": statistics.median(latencies)})
    return rows


def bench_concurrency(engine, images, clients, new_tokens) -> dict:
    """``clients`` single-image caption requests: one after another, then all at once through
    the cross-request batcher (what the deployed app does with concurrent HTTP requests)."""
    policy = policy_from_settings({"task": "caption", "max_new_tokens": new_tokens})
    requests = [[images[i % len(images)]] for i in range(clients)]
    sequential = timed(lambda: [engine.run(request, policy) for request in requests])
    batcher = RequestBatcher(engine, max_wait_s=0.01, max_images=engine.max_batch_size)
    with ThreadPoolExecutor(clients) as pool:
        concurrent = timed(lambda: list(pool.map(lambda request: batcher.run(request, policy), requests)))
    batcher.close()
    return {
        "clients": clients,
        "sequential_s": sequential,
        "concurrent_s": concurrent,
        "speedup": sequential / concurrent,
        "joint_runs": batcher.joint_runs,
    }


def bench_decode_bandwidth(engine, image, new_tokens) -> dict:
    """Weight bytes read per decode step at batch 1, from the time of ``new_tokens`` steps
    minus one step (prefill and vision cancel out)."""
    policy_long = policy_from_settings({"task": "caption", "max_new_tokens": new_tokens})
    policy_short = policy_from_settings({"task": "caption", "max_new_tokens": 1})
    long = statistics.median(timed(lambda: engine.run([image], policy_long)) for _ in range(3))
    short = statistics.median(timed(lambda: engine.run([image], policy_short)) for _ in range(3))
    step_s = (long - short) / (new_tokens - 1)
    text = engine.backend.model.text_model
    weight_bytes = sum(p.numel() * p.element_size() for p in text.parameters())
    achieved = weight_bytes / step_s / 1e9
    return {
        "step_ms": step_s * 1e3,
        "decoder_weight_gb": weight_bytes / 1e9,
        "achieved_gb_per_s": achieved,
        **bandwidth_share(achieved),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    processor = real_size_processor()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(max(args.batches))]
    report = {"environment": environment(args.device), "settings": {k: str(v) for k, v in vars(args).items()}}
    reference_model = random_model(args.device, torch.float32)
    log("reference path")
    report["reference"] = bench_reference(reference_model, processor, images[: args.reference_images], args.new_tokens)
    on_gpu = args.device.startswith("cuda")
    model = random_model(args.device, torch.bfloat16) if on_gpu else reference_model
    del reference_model
    engine = Kosmos2Engine(TorchBackend(model, args.device), processor, model.config, max_batch_size=max(args.batches))
    sections = {
        "engine": lambda: bench_batches(engine, images, args.batches, args.new_tokens, args.repeats),
        "phrase_grounding": lambda: bench_phrases(engine, images[0], args.phrases, args.repeats),
        "concurrency": lambda: bench_concurrency(engine, images, args.clients, args.new_tokens),
        "decode_bandwidth": lambda: bench_decode_bandwidth(engine, images[0], args.new_tokens),
    }
    with mock.patch("kosmos2_engine.engine.stop_token_ids", lambda tokenizer, policy: ()):
        log("engine warm-up")
        report["warm_up_s"] = timed(lambda: engine.warm_up(checks=False))  # random weights: nothing to check
        report["decoder"], report["dtype"] = engine.decoder_status.describe(), str(engine.dtype)
        log(f"decoder: {report['decoder']}, {report['dtype']}")
        for name, section in sections.items():
            log(name.replace("_", " "))
            report[name] = section()
            write_partial(report, args.out)  # what a run stopped at its time limit has measured
        report["caption_batch1_s"] = report["engine"][0]["p50_s"]
    best = max(row["images_per_s"] for row in report["engine"])
    report["speedup_vs_reference"] = best / report["reference"]["images_per_s"]
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
