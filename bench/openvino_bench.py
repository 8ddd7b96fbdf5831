"""OpenVINO benchmark on CPU: torch fp32 against the OpenVINO engine in fp32, int8 and int4, side
by side in one run, on the real Kosmos-2 architecture (``Kosmos2Config()``, 1.66 B parameters)
with seeded random weights and a forced 32-token caption per image (batch 1).

* ``torch-reference``: transformers' ``generate`` in fp32, pixels in (what the public app runs);
* ``torch-engine``: our torch engine (static-cache decoder), fp32;
* ``openvino-fp32`` / ``-int8`` / ``-int4``: :class:`OpenVINOBackend` on IR exported from the same
  weights (``kosmos2_engine.runtime.openvino.convert``, as ``export`` does);
* ``openvino-int8-act``: the int8 row with its image encoder quantised by NNCF post-training
  quantisation (int8 weights and activations; embeddings, first layer and resampler in float32),
  calibrated on the export's 64 generated scenes, as ``--weights int8-act`` exports it.

Every variant but the reference also reports its time per stage (vision pass, prefill, decode
steps), and the report the CPU's instruction-set flags (AVX2, AVX-512, VNNI, AMX), which decide
what int8 gains on a given machine.

Each variant runs in its own process, so that its memory is its own. Reported per variant:
latency per image (p50, vision pass included), decoded tokens/s, load time, IR size, RSS after
load, peak RSS while serving (the kernel's high-water mark, reset after the warm-up caption),
and at the end how much of the RSS is private (``RssAnon``) and how much is mapped files
(``RssFile``: OpenVINO maps the IR's .bin; those pages are page cache, shared and reclaimable).

    python -m bench.openvino_bench                 # about 18 minutes on 2 cores, ~20 GB of disk
    python -m bench.openvino_bench --images 5
    python -m bench.openvino_bench --variants openvino-int8 openvino-int8-act

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
VARIANTS = ("torch-reference", "torch-engine", "openvino-fp32", "openvino-int8", "openvino-int4", "openvino-int8-act")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
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
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="default: all")
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


def export_irs(work: Path, variants: list[str]) -> dict[str, float]:
    """The IR ``variants`` need (fp32 always: the others are made from it) of the random model
    under ``work``; returns their sizes in MB."""
    import openvino as ov

    from kosmos2_engine.runtime.openvino.convert import (
        compress_decoder,
        convert_decoder,
        convert_image_encoder,
        quantize_image_encoder,
        save,
    )
    from kosmos2_engine.runtime.openvino.export import DECODER, IMAGE_ENCODER

    fp32 = work / "openvino-fp32"
    if not (fp32 / DECODER).is_file():
        log("building the random model and converting it (fp32)")
        model = random_model()
        fp32.mkdir(parents=True, exist_ok=True)
        save(convert_image_encoder(model), fp32 / IMAGE_ENCODER)
        save(convert_decoder(model), fp32 / DECODER)
        del model
    needed = {"openvino-int8" if v == "openvino-int8-act" else v for v in variants}
    for weights in [w for w in ("int8", "int4") if f"openvino-{w}" in needed]:
        folder = work / f"openvino-{weights}"
        if not (folder / DECODER).is_file():
            log(f"compressing the decoder ({weights})")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(fp32 / IMAGE_ENCODER, folder / IMAGE_ENCODER)
            shutil.copy(fp32 / IMAGE_ENCODER.replace(".xml", ".bin"), folder / IMAGE_ENCODER.replace(".xml", ".bin"))
            save(compress_decoder(ov.Core().read_model(str(fp32 / DECODER)), weights), folder / DECODER)
    activations = work / "openvino-int8-act"
    if "openvino-int8-act" in variants and not (activations / DECODER).is_file():
        log("quantising the image encoder (int8 weights and activations, the export's generated calibration scenes)")
        activations.mkdir(parents=True, exist_ok=True)
        for name in (DECODER, DECODER.replace(".xml", ".bin")):
            shutil.copy(work / "openvino-int8" / name, activations / name)
        encoder = ov.Core().read_model(str(fp32 / IMAGE_ENCODER))
        save(quantize_image_encoder(encoder, calibration_pixels()), activations / IMAGE_ENCODER)
    return {
        variant: sum(f.stat().st_size for f in (work / variant).iterdir()) / 2**20
        for variant in variants
        if (work / variant).is_dir()
    }


def calibration_pixels() -> list[np.ndarray]:
    """float32 ``pixel_values`` (1, 3, 224, 224) of the export's generated calibration scenes."""
    from kosmos2_engine.imaging import pixel_values
    from kosmos2_engine.runtime.openvino.calibration import generated_scenes

    processor = processor_224().image_processor
    return [pixel_values(processor, [image], 224) for image in generated_scenes()]


def cpu_flags() -> list[str]:
    """The instruction-set flags of :data:`ISA_FLAGS` this CPU has (Linux ``/proc/cpuinfo``)."""
    info = Path("/proc/cpuinfo")
    flags = set(next((line.split(":", 1)[1].split() for line in info.read_text().splitlines()
                      if line.startswith("flags")), [])) if info.exists() else set()  # fmt: skip
    return [flag for flag in ISA_FLAGS if flag in flags]


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
    decoder = engine.backend.decoder
    prefill = decoder._prefill  # timed in place: instrumentation of this bench only

    def timed_prefill(*args, **kwargs):
        start = time.perf_counter()
        try:
            return prefill(*args, **kwargs)
        finally:
            STAGES["prefill"] = time.perf_counter() - start

    decoder._prefill = timed_prefill

    def run(image) -> int:
        start = time.perf_counter()
        embeds = engine.encode_images([image])
        STAGES["vision"] = time.perf_counter() - start
        start = time.perf_counter()
        tokens = decoder.decode(embeds, [prompt], NEW_TOKENS, stop_ids=()).tokens.shape[1]
        STAGES["decode"] = time.perf_counter() - start - STAGES["prefill"]
        return tokens

    return time.perf_counter() - started, run


STAGES: dict[str, float] = {}  # the last caption's seconds per stage (vision, prefill, decode)


def measure(variant: str, work: Path, count: int) -> dict:
    """Child process: load, one warm-up caption, then ``count`` timed captions."""
    load_s, run = caption_runner(variant, work)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(count + 1)]
    assert run(images[0]) == NEW_TOKENS
    gc.collect()
    loaded_rss = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on: while serving
    latencies, stages = [], []
    for image in images[1:]:
        start = time.perf_counter()
        tokens = run(image)
        latencies.append(time.perf_counter() - start)
        stages.append(dict(STAGES))
        assert tokens == NEW_TOKENS
    median = statistics.median(latencies)
    return {
        "stages_p50_s": {name: statistics.median(s[name] for s in stages) for name in STAGES} or None,
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


def targets(results: dict) -> dict:
    """The goals the measured variants can be judged on (those of the variants that ran)."""
    found = {}
    int8, act = results.get("openvino-int8"), results.get("openvino-int8-act")
    if int8 and "speedup_vs_torch_reference" in int8:
        found["int8_at_least_3x_faster"] = int8["speedup_vs_torch_reference"] >= 3
        found["int8_peak_rss_at_most_half"] = int8["rss_vs_torch_reference"] <= 0.5
        found["int8_private_rss_at_most_half"] = int8["anon_rss_vs_torch_reference"] <= 0.5
    if act and "speedup_vs_int8" in act:
        found["int8_act_at_least_1.25x_int8"] = act["speedup_vs_int8"] >= 1.25
    return found


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

    sizes = export_irs(args.work, args.variants)
    results = {variant: run_variant(variant, args) for variant in args.variants}
    reference = results.get("torch-reference")
    for variant, measured in results.items():
        if reference is not None:
            measured["speedup_vs_torch_reference"] = reference["p50_s"] / measured["p50_s"]
            measured["rss_vs_torch_reference"] = measured["serving_peak_rss_mb"] / reference["serving_peak_rss_mb"]
            measured["anon_rss_vs_torch_reference"] = measured["rss_anon_mb"] / reference["rss_anon_mb"]
        measured["ir_size_mb"] = sizes.get(variant)
    if "openvino-int8" in results and "openvino-int8-act" in results:
        results["openvino-int8-act"]["speedup_vs_int8"] = (
            results["openvino-int8"]["p50_s"] / results["openvino-int8-act"]["p50_s"]
        )
    report = {
        "benchmark": "openvino",
        "environment": {
            **environment("cpu"),
            "openvino": openvino.__version__,
            "nncf": nncf.__version__,
            "cpu_flags": cpu_flags(),
        },  # fmt: skip
        "model": "Kosmos2Config() defaults, random weights (seed 0)",
        "new_tokens": NEW_TOKENS,
        "images_per_variant": args.images,
        "results": results,
        "targets": targets(results),
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
                        "stages_p50_s",
                        "tokens_per_s",
                        "serving_peak_rss_mb",
                        "rss_anon_mb",
                        "rss_file_mb",
                        "speedup_vs_torch_reference",
                        "speedup_vs_int8",
                        "ir_size_mb",
                    )
                    if k in m
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
