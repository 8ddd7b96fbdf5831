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

Every bench writes its result into ``--out`` (a lent machine's results come back only from
there), and this report is rewritten after each step: a check stopped by its caller keeps what
it measured. The GPU tests read the committed tiny checkpoint as it is (the image's torch is not
the pin, and a rebuild takes 40 minutes).

``--dry-run`` (on any machine, CUDA or not) checks every step without running it on a GPU, the
way the GPU image would import it (supervisely made unimportable): the stack is read, the GPU
tests are collected, each bench imports its modules and parses its arguments; nothing is
written.

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
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# with the stack check (seconds), under 8 minutes in all
# Measured on an H200 (2026-12-04, bench/results/gpu-2026-12-04-h200.md): the first compile of the
# real-size decode step takes about 3 minutes of the engine benchmark's warm-up; the masks and
# video benchmarks then find it in inductor's on-disk cache.
STEP_LIMITS_S = {"gpu tests": 150, "engine benchmark": 240, "masks benchmark": 50, "video benchmark": 40}


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


def without_sdk(folder: Path) -> Path:
    """A folder that, first on ``PYTHONPATH``, makes ``import supervisely`` fail as on the GPU image."""
    package = folder / "supervisely"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('raise ImportError("supervisely is not on the GPU image")\n')
    return folder


def run_step(name: str, command: list[str], limit_s: int, first_on_path: Path | None = None) -> dict:
    """Run ``command`` from the repository root within ``limit_s``; its outcome and output tail."""
    log(f"{name}: {' '.join(command)}")
    started = time.monotonic()
    path = [str(first_on_path) if first_on_path else "", "src", ".", os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    try:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit_s)
        outcome = "passed" if result.returncode == 0 else f"failed (exit {result.returncode})"
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        outcome, output = f"stopped at its limit of {limit_s} s", (expired.stdout or b"").decode(errors="replace")
    seconds = round(time.monotonic() - started, 1)
    log(f"{name}: {outcome} in {seconds} s")
    return {"command": command, "outcome": outcome, "seconds": seconds, "output_tail": output[-4000:]}


def steps(dry_run: bool, out: Path) -> dict[str, list[str]]:
    python = sys.executable
    gpu_tests = [python, "-m", "pytest", "--noconftest", "-m", "gpu", "tests/unit/test_gpu.py"]
    gpu_tests += ["-v", "-rA", "--durations=0", "-p", "no:cacheprovider"]
    benches = {
        "engine benchmark": [python, "-m", "bench.engine_bench", "--device", "cuda"],
        "masks benchmark": [python, "-m", "bench.masks_bench", "--device", "cuda", "--sam", "large"],
        "video benchmark": [python, "-m", "bench.video_bench", "--device", "cuda", "--only", "real"],
    }
    if dry_run:  # each bench parses its arguments and imports what it needs, on any machine
        return {"gpu tests": [*gpu_tests, "--collect-only"]} | {
            name: [*command[:3], "--help"] for name, command in benches.items()
        }
    return {"gpu tests": gpu_tests} | {name: [*command, "--out", str(out)] for name, command in benches.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="check the steps without a GPU; write nothing")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--only", nargs="+", choices=list(STEP_LIMITS_S), help="run these steps alone")
    args = parser.parse_args(argv)
    log("stack")
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "dry_run": args.dry_run, "stack": stack()}
    log(json.dumps(report["stack"]))
    if not args.dry_run and not report["stack"]["cuda_available"]:
        print("No CUDA device here: run it on the GPU machine, or use --dry-run.", file=sys.stderr)
        return 2
    wanted = args.only or list(STEP_LIMITS_S)
    planned = {name: step for name, step in steps(args.dry_run, args.out).items() if name in wanted}
    if args.dry_run:  # nothing runs on a GPU: the steps' imports may overlap
        with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(max_workers=len(planned)) as pool:
            blocker = without_sdk(Path(folder))
            futures = {
                name: pool.submit(run_step, name, step, STEP_LIMITS_S[name], blocker) for name, step in planned.items()
            }
            report["steps"] = {name: future.result() for name, future in futures.items()}
        collected = re.search(r"(\d+) tests? collected", report["steps"].get("gpu tests", {}).get("output_tail", ""))
        report["gpu_tests_collected"] = int(collected.group(1)) if collected else 0
        print(json.dumps({k: v for k, v in report.items() if k != "steps"}, indent=2))
    else:  # one at a time: each step has the GPU to itself; the report rewritten after each
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"gpu-check-{report['date'][:10]}.json"
        report["steps"] = {}
        for name, command in planned.items():
            report["steps"][name] = run_step(name, command, STEP_LIMITS_S[name])
            path.write_text(json.dumps(report, indent=2) + "\n")
        log(f"written {path}")
    failed = [name for name, step in report["steps"].items() if step["outcome"] != "passed"]
    if failed:
        print(f"failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
