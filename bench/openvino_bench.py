"""OpenVINO benchmark on CPU: torch fp32 against the OpenVINO engine in fp32, int8 and int4, side
by side in one run, on the real Kosmos-2 architecture (``Kosmos2Config()``, 1.66 B parameters)
with seeded random weights and a forced 32-token caption per image (batch 1).

* ``torch-reference``: transformers' ``generate`` in fp32, pixels in (what the public app runs);
* ``torch-engine``: our torch engine (static-cache decoder), fp32;
* ``openvino-fp32`` / ``-int8`` / ``-int4``: :class:`OpenVINOBackend` on IR exported from the same
  weights (``kosmos2_engine.runtime.openvino.convert``, as ``export`` does).

Each variant runs in its own process, so that its memory is its own. Reported per variant:
latency per image (p50, vision pass included), decoded tokens/s, load time, IR size, RSS after
load, peak RSS while serving (the kernel's high-water mark, reset after the warm-up caption),
and at the end how much of the RSS is private (``RssAnon``) and how much is mapped files
(``RssFile``: OpenVINO maps the IR's .bin; those pages are page cache, shared and reclaimable).

    python -m bench.openvino_bench                 # about 15 minutes on 2 cores, ~20 GB of disk
    python -m bench.openvino_bench --images 5

Writes ``bench/results/openvino-<date>-cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.memory import status_mb

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = REPO / "tests" / "tiny_model" / "checkpoint"
VARIANTS = ("torch-reference", "torch-engine", "openvino-fp32", "openvino-int8", "openvino-int4")
NEW_TOKENS = 32


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3, help="timed images per variant (after one warm-up)")
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / ".cache" / "openvino-bench",
        help="where the IRs of the random model are written",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child process
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def processor_224():
    """The tiny checkpoint's processor, its images set to 224 px: tokens differ from the real
    vocabulary, lengths and costs do not."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(TOKENIZER_DIR)
    processor.image_processor.size = {"height": 224, "width": 224}
    processor.image_processor.crop_size = {"height": 224, "width": 224}
    return processor


def random_model():
    import torch
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    torch.manual_seed(0)
    return Kosmos2ForConditionalGeneration(Kosmos2Config()).eval()


def export_irs(work: Path) -> dict[str, float]:
    """fp32, int8 and int4 IR of the random model under ``work``; returns their sizes in MB."""
    import openvino as ov

    from kosmos2_engine.runtime.openvino.convert import compress_decoder, convert_decoder, convert_image_encoder, save
    from kosmos2_engine.runtime.openvino.export import DECODER, IMAGE_ENCODER

    fp32 = work / "openvino-fp32"
    if not (fp32 / DECODER).is_file():
        log("building the random model and converting it (fp32)")
        model = random_model()
        fp32.mkdir(parents=True, exist_ok=True)
        save(convert_image_encoder(model), fp32 / IMAGE_ENCODER)
        save(convert_decoder(model), fp32 / DECODER)
        del model
    for weights in ("int8", "int4"):
        folder = work / f"openvino-{weights}"
        if not (folder / DECODER).is_file():
            log(f"compressing the decoder ({weights})")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(fp32 / IMAGE_ENCODER, folder / IMAGE_ENCODER)
            shutil.copy(fp32 / IMAGE_ENCODER.replace(".xml", ".bin"), folder / IMAGE_ENCODER.replace(".xml", ".bin"))
            save(compress_decoder(ov.Core().read_model(str(fp32 / DECODER)), weights), folder / DECODER)
    return {
        f"openvino-{w}": sum(f.stat().st_size for f in (work / f"openvino-{w}").iterdir()) / 2**20
        for w in ("fp32", "int8", "int4")
    }


def caption_runner(variant: str, work: Path):
    """(load seconds, a function image -> decoded token count) for ``variant``."""
    from kosmos2_engine.prompts import encode_prompt
    from kosmos2_engine.tasks import CAPTION_PROMPT

    started = time.perf_counter()
    processor = processor_224()
    if variant == "torch-reference":
        model = random_model()

        def run(image) -> int:
            inputs = processor(images=image, text=CAPTION_PROMPT, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
            return out.shape[1] - inputs["input_ids"].shape[1]

        return time.perf_counter() - started, run
    from transformers import Kosmos2Config

    from kosmos2_engine import Kosmos2Engine

    if variant == "torch-engine":
        from kosmos2_engine.runtime.torch.backend import TorchBackend

        backend = TorchBackend(random_model(), "cpu")
    else:
        from kosmos2_engine.runtime.openvino.backend import OpenVINOBackend

        backend = OpenVINOBackend(work / variant, Kosmos2Config(), variant.split("-")[1])
    engine = Kosmos2Engine(backend, processor, Kosmos2Config())
    prompt = encode_prompt(processor.tokenizer, CAPTION_PROMPT)

    def run(image) -> int:
        embeds = engine.encode_images([image])
        return engine.backend.decoder.decode(embeds, [prompt], NEW_TOKENS, stop_ids=()).tokens.shape[1]

    return time.perf_counter() - started, run


def measure(variant: str, work: Path, count: int) -> dict:
    """Child process: load, one warm-up caption, then ``count`` timed captions."""
    load_s, run = caption_runner(variant, work)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(count + 1)]
    assert run(images[0]) == NEW_TOKENS
    gc.collect()
    loaded_rss = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on: while serving
    latencies = []
    for image in images[1:]:
        start = time.perf_counter()
        tokens = run(image)
        latencies.append(time.perf_counter() - start)
        assert tokens == NEW_TOKENS
    median = statistics.median(latencies)
    return {
        "load_s": load_s,
        "p50_s": median,
        "latencies_s": latencies,
        "tokens_per_s": NEW_TOKENS / median,
        "rss_after_load_mb": loaded_rss,
        "serving_peak_rss_mb": status_mb("VmHWM"),
        "rss_anon_mb": status_mb("RssAnon"),
        "rss_file_mb": status_mb("RssFile"),
        "lifetime_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_variant(variant: str, args) -> dict:
    log(f"{variant}: measuring {args.images} images")
    command = [
        sys.executable,
        "-m",
        "bench.openvino_bench",
        "--variant",
        variant,
        "--images",
        str(args.images),
        "--work",
        str(args.work),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    log(f"{variant}: p50 {measured['p50_s']:.2f} s/image, serving peak RSS {measured['serving_peak_rss_mb']:.0f} MB")
    return measured


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args.variant, args.work, args.images)))
        return 0
    import nncf
    import openvino

    from bench.machine import environment

    sizes = export_irs(args.work)
    results = {variant: run_variant(variant, args) for variant in VARIANTS}
    reference = results["torch-reference"]
    for variant, measured in results.items():
        measured["speedup_vs_torch_reference"] = reference["p50_s"] / measured["p50_s"]
        measured["rss_vs_torch_reference"] = measured["serving_peak_rss_mb"] / reference["serving_peak_rss_mb"]
        measured["anon_rss_vs_torch_reference"] = measured["rss_anon_mb"] / reference["rss_anon_mb"]
        measured["ir_size_mb"] = sizes.get(variant)
    int8 = results["openvino-int8"]
    report = {
        "benchmark": "openvino",
        "environment": {**environment("cpu"), "openvino": openvino.__version__, "nncf": nncf.__version__},
        "model": "Kosmos2Config() defaults, random weights (seed 0)",
        "new_tokens": NEW_TOKENS,
        "images_per_variant": args.images,
        "results": results,
        "targets": {
            "int8_at_least_3x_faster": int8["speedup_vs_torch_reference"] >= 3,
            "int8_peak_rss_at_most_half": int8["rss_vs_torch_reference"] <= 0.5,
            "int8_private_rss_at_most_half": int8["anon_rss_vs_torch_reference"] <= 0.5,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"openvino-{report['environment']['date'][:10]}-cpu.json"
    (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                v: {
                    k: round(m[k], 3) if isinstance(m[k], float) else m[k]
                    for k in (
                        "p50_s",
                        "tokens_per_s",
                        "serving_peak_rss_mb",
                        "rss_anon_mb",
                        "rss_file_mb",
                        "speedup_vs_torch_reference",
                        "ir_size_mb",
                    )
                }
                for v, m in results.items()
            },
            indent=2,
        )
    )
    print(json.dumps(report["targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
