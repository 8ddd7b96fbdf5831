"""One command for a lent GPU machine: check its stack, run the GPU tests and the full engine
benchmark, and write what happened under ``bench/results/`` (``make gpu-check``).

The GPU machine has torch and transformers but not supervisely, and reaches no package
registry; nothing here needs supervisely. Steps, each with a time limit so that the whole check
fits in 8 minutes:

1. **stack**: python, torch, CUDA, the GPU, and transformers against ``requirements.txt``'s pin.
   A different transformers is reported; the README says how to carry the pinned wheel
   (``.whl/``, installed by ``make gpu-check`` when present).
2. **gpu tests**: ``pytest --noconftest -m gpu tests/unit/test_gpu.py`` (compiled CUDA graphs equal
   eager; bf16 boxes within one bin of fp32; the idle freeze to CPU and back).
3. **engine benchmark**: ``python -m bench.engine_bench --device cuda`` (batches 1 to 64,
   64-token captions, phrases, concurrent requests, decode bandwidth, peak memory).
4. **masks benchmark**: ``python -m bench.masks_bench --device cuda --sam large`` (SAM 2 Hiera
   large on 1, 5 and 20 boxes, ours against one call per box, and what masks add to the boxes).
5. **video benchmark**: ``python -m bench.video_bench --device cuda --only real`` (frames per
   second, the video path against the same frames as images, on the real architecture). It
   reads MPEG-4 with PyAV and OpenCV; where the GPU image lacks them the step fails alone.

``--dry-run`` (on any machine, CUDA or not) checks every step without running it on a GPU:
the stack is read, the GPU tests are collected, the benchmark's arguments are parsed; nothing
is written to ``bench/results/``.

    python -m bench.gpu_check                # on the GPU machine (make gpu-check)
    python -m bench.gpu_check --dry-run      # anywhere (make gpu-check DRY_RUN=1)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# with the stack check (seconds), under 8 minutes in all
STEP_LIMITS_S = {"gpu tests": 150, "engine benchmark": 210, "masks benchmark": 60, "video benchmark": 50}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def pinned(package: str) -> str | None:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name.lower() == package.lower():
            return version
    return None


def stack() -> dict:
    """What the machine runs, and whether transformers and torch are the pinned ones."""
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }
    pins = {"transformers": pinned("transformers"), "torch": pinned("torch")}
    found["differs_from_pins"] = {
        name: {"found": found[name].split("+")[0], "pinned": version}
        for name, version in pins.items()
        if version and found[name].split("+")[0] != version
    }
    return found


def run_step(name: str, command: list[str], limit_s: int) -> dict:
    """Run ``command`` from the repository root within ``limit_s``; its outcome and output tail."""
    log(f"{name}: {' '.join(command)}")
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, ["src", ".", os.environ.get("PYTHONPATH")]))}
    try:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit_s)
        outcome = "passed" if result.returncode == 0 else f"failed (exit {result.returncode})"
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        outcome, output = f"stopped at its limit of {limit_s} s", (expired.stdout or b"").decode(errors="replace")
    seconds = round(time.monotonic() - started, 1)
    log(f"{name}: {outcome} in {seconds} s")
    return {"command": command, "outcome": outcome, "seconds": seconds, "output_tail": output[-4000:]}


def steps(dry_run: bool) -> dict[str, list[str]]:
    python = sys.executable
    gpu_tests = [
        python,
        "-m",
        "pytest",
        "--noconftest",
        "-m",
        "gpu",
        "tests/unit/test_gpu.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    benches = {
        "engine benchmark": [python, "-m", "bench.engine_bench", "--device", "cuda"],
        "masks benchmark": [python, "-m", "bench.masks_bench", "--device", "cuda", "--sam", "large"],
        "video benchmark": [python, "-m", "bench.video_bench", "--device", "cuda", "--only", "real"],
    }
    if dry_run:  # each bench parses its arguments and imports what it needs, on any machine
        return {"gpu tests": [*gpu_tests, "--collect-only"]} | {
            name: [*command[:3], "--help"] for name, command in benches.items()
        }
    return {"gpu tests": gpu_tests} | benches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="check the steps without a GPU; write nothing")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    log("stack")
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "dry_run": args.dry_run, "stack": stack()}
    log(json.dumps(report["stack"]))
    if not args.dry_run and not report["stack"]["cuda_available"]:
        print("No CUDA device here: run it on the GPU machine, or use --dry-run.", file=sys.stderr)
        return 2
    planned = steps(args.dry_run)
    if args.dry_run:  # nothing runs on a GPU: the steps' imports may overlap
        with ThreadPoolExecutor(max_workers=len(planned)) as pool:
            futures = {name: pool.submit(run_step, name, step, STEP_LIMITS_S[name]) for name, step in planned.items()}
            report["steps"] = {name: future.result() for name, future in futures.items()}
    else:  # one at a time: each step has the GPU to itself
        report["steps"] = {name: run_step(name, command, STEP_LIMITS_S[name]) for name, command in planned.items()}
    if args.dry_run:
        collected = re.search(r"(\d+) tests? collected", report["steps"]["gpu tests"]["output_tail"])
        report["gpu_tests_collected"] = int(collected.group(1)) if collected else 0
        print(json.dumps({k: v for k, v in report.items() if k != "steps"}, indent=2))
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"gpu-check-{report['date'][:10]}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        log(f"written {path}")
    failed = [name for name, step in report["steps"].items() if step["outcome"] != "passed"]
    if failed:
        print(f"failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
