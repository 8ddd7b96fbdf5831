"""Load test: many clients at once against the real server, good and bad requests mixed.

Every good request (a PNG, valid settings) must get a 200 with an annotation; every bad one
(garbage bytes, an oversized image, bad settings) its 400; nothing else, and the server must
still answer afterwards. Reports throughput and p50/p95 latency per kind.

    python -m bench.load_test                       # tiny model, CPU, 16 clients x 20 requests
    python -m bench.load_test --clients 32 --requests 50

Writes ``bench/results/load-<date>-<device>.json``; exits 1 if any request got the wrong answer.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from bench.live_server import deployed_server, server_arguments, write_result

MAX_PIXELS = 4_000_000


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def request_kinds(seed: int) -> dict[str, tuple[bytes, dict, int]]:
    """Each kind of request: (file bytes, settings, the status it must get)."""
    rng = np.random.default_rng(seed)
    image = png(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    return {
        "caption": (image, {"max_new_tokens": 16}, 200),
        "grounding": (image, {"task": "phrase_grounding", "phrases": "circle. square"}, 200),
        "garbage_bytes": (rng.bytes(2048), {}, 400),
        "oversized": (png(np.zeros((2500, 2000, 3), np.uint8)), {}, 400),
        "bad_settings": (image, {"max_new_tokens": -3}, 400),
    }


def send(url: str, kind: str, kinds: dict) -> tuple[str, int, float]:
    data, settings, _ = kinds[kind]
    start = time.perf_counter()
    response = requests.post(f"{url}/inference_image", files={"files": ("image.png", data, "image/png")},
                             data={"settings": json.dumps({"settings": settings})}, timeout=300)
    ok = response.status_code != 200 or "annotation" in response.json()
    return kind, response.status_code if ok else -1, time.perf_counter() - start


def run_load(url: str, clients: int, per_client: int, seed: int) -> dict:
    kinds = request_kinds(seed)
    rng = random.Random(seed)
    plan = [rng.choice(list(kinds)) for _ in range(clients * per_client)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(lambda kind: send(url, kind, kinds), plan))
    elapsed = time.perf_counter() - start
    report = {"requests": len(plan), "clients": clients, "seconds": elapsed,
              "requests_per_s": len(plan) / elapsed, "wrong": [], "kinds": {}}
    for kind, (_, _, expected) in kinds.items():
        mine = [(status, seconds) for k, status, seconds in outcomes if k == kind]
        latencies = sorted(seconds for _, seconds in mine)
        wrong = [status for status, _ in mine if status != expected]
        report["wrong"] += [f"{kind}: {status}" for status in wrong]
        if latencies:
            report["kinds"][kind] = {"count": len(mine), "expected_status": expected,
                                     "p50_s": statistics.median(latencies),
                                     "p95_s": latencies[round(0.95 * (len(latencies) - 1))]}
    report["alive_after"] = requests.get(f"{url}/is_ready", timeout=10).status_code == 200
    return report


def main(argv=None) -> int:
    parser = server_arguments(__doc__.split("\n\n")[0], clients=16)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        limit = {"KOSMOS2_MAX_IMAGE_PIXELS": str(MAX_PIXELS)}
        with deployed_server(args.checkpoint, args.device, Path(tmp), limit) as url:
            report = run_load(url, args.clients, args.requests, seed=0)
    report.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), device=args.device,
                  checkpoint=args.checkpoint or "tiny")
    write_result(report, args.out, f"load-{report['date'][:10]}-{args.device}.json")
    return 1 if report["wrong"] or not report["alive_after"] else 0


if __name__ == "__main__":
    sys.exit(main())
