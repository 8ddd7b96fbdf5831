"""Load test: many clients at once against the real server, good and bad requests mixed.

Every distinct good request (a task on an image of some size) is first sent alone; under load,
each must get a 200 with the same annotation (no cross-talk between requests; confidences to
4 decimals), and each bad one (garbage bytes, an oversized image, bad settings, a region
outside the image) its 400. After a warm-up of the same mix (65 s: the server drops finished
requests after 60 s), the server's RSS, at its peak and at the end, may grow by at most 10 %.
The server must still answer afterwards. Reports throughput and p50/p95 latency per kind.

    python -m bench.load_test                       # tiny model, CPU, 32 clients, 2000 requests
    python -m bench.load_test --clients 8 --requests 200

Writes ``bench/results/load-<date>-<device>.json``; exits 1 if any check fails.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from bench.live_server import deployed_server, server_arguments, write_result
from bench.memory import status_mb

MAX_PIXELS = 4_000_000
MAX_RSS_GROWTH = 0.10
SIZES = {"small": (48, 64), "medium": (240, 320), "large": (960, 1280), "strip": (20, 900)}
GOOD_SETTINGS = {
    "caption": {"max_new_tokens": 16},
    "grounding": {"task": "phrase_grounding", "phrases": "circle. square"},
    "vqa": {"task": "vqa", "question": "What colour is the circle?", "max_new_tokens": 8},
    "region": {"task": "region_description", "regions": [[0, 0, 10, 10]], "max_new_tokens": 8},
}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def request_kinds(seed: int) -> dict[str, tuple[bytes, dict, int]]:
    """Each kind of request: (file bytes, settings, the status it must get). Good kinds are
    every task on every image size; bad kinds are named for what is wrong."""
    rng = np.random.default_rng(seed)
    images = {name: png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for name, (h, w) in SIZES.items()}
    kinds = {f"{task}/{size}": (images[size], settings, 200)
             for task, settings in GOOD_SETTINGS.items() for size in SIZES}
    kinds.update({
        "bad/garbage_bytes": (rng.bytes(2048), {}, 400),
        "bad/oversized": (png(np.zeros((2500, 2000, 3), np.uint8)), {}, 400),
        "bad/max_new_tokens": (images["small"], {"max_new_tokens": -3}, 400),
        "bad/region_outside": (images["small"], {"task": "region_description",
                                                 "regions": [[0, 0, 500, 500]]}, 400),
    })
    return kinds


def canonical(annotation: dict) -> str:
    """The annotation as text, floats rounded to 4 decimals (batch composition may move the
    last bits of a probability; classes, boxes and texts must match exactly)."""
    def rounded(value):
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, dict):
            return {key: rounded(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rounded(item) for item in value]
        return value
    return json.dumps(rounded(annotation), sort_keys=True)


def send(url: str, kind: str, kinds: dict) -> tuple[str, int, str | None, float]:
    """POST one request as ``Session.inference_image_path`` does: (kind, status, canonical
    annotation or None, seconds)."""
    data, settings, _ = kinds[kind]
    start = time.perf_counter()
    response = requests.post(f"{url}/inference_image", files={"files": ("image.png", data, "image/png")},
                             data={"settings": json.dumps({"settings": settings})}, timeout=300)
    seconds = time.perf_counter() - start
    annotation = response.json().get("annotation") if response.status_code == 200 else None
    return kind, response.status_code, None if annotation is None else canonical(annotation), seconds


def run_plan(url: str, plan: list[str], kinds: dict, clients: int) -> tuple[list, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(lambda kind: send(url, kind, kinds), plan))
    return outcomes, time.perf_counter() - start


def check(outcomes: list, kinds: dict, alone: dict[str, str]) -> tuple[list[str], dict]:
    """Wrong answers, and count / p50 / p95 latency per kind."""
    wrong, per_kind = [], {}
    for kind, (_, _, expected) in kinds.items():
        mine = [(status, annotation, s) for k, status, annotation, s in outcomes if k == kind]
        wrong += [f"{kind}: status {status}" for status, _, _ in mine if status != expected]
        wrong += [f"{kind}: annotation differs from the request alone" for status, annotation, _ in mine
                  if status == 200 and annotation != alone.get(kind)]
        latencies = sorted(s for _, _, s in mine)
        if latencies:
            per_kind[kind] = {"count": len(mine), "expected_status": expected,
                              "p50_s": statistics.median(latencies),
                              "p95_s": latencies[round(0.95 * (len(latencies) - 1))]}
    return wrong, per_kind


class RssSampler:
    """Samples process ``pid``'s RSS every 0.25 s while in a ``with`` block; ``peak`` and
    ``end`` in MB after it."""

    def __init__(self, pid: int):
        self.pid, self.samples, self._stop = pid, [status_mb("VmRSS", pid)], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.samples.append(status_mb("VmRSS", self.pid))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(status_mb("VmRSS", self.pid))

    @property
    def peak(self) -> int:
        return max(self.samples)

    @property
    def end(self) -> int:
        return self.samples[-1]


def warm_up(url: str, kinds: dict, clients: int, seconds: float, rng: random.Random) -> int:
    """The same mix of requests for at least ``seconds`` (long enough for the server to drop
    finished requests, 60 s after them: its steady state). Returns how many were sent."""
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        run_plan(url, [rng.choice(list(kinds)) for _ in range(clients * 4)], kinds, clients)
        sent += clients * 4
    return sent


def run_load(url: str, pid: int, clients: int, total: int, warm_up_s: float, seed: int) -> dict:
    kinds = request_kinds(seed)
    alone = {kind: send(url, kind, kinds)[2] for kind, (_, _, code) in kinds.items() if code == 200}
    rng = random.Random(seed)
    with RssSampler(pid) as warm:
        warm_up_requests = warm_up(url, kinds, clients, warm_up_s, rng)
    plan = [rng.choice(list(kinds)) for _ in range(total)]
    with RssSampler(pid) as load:
        outcomes, elapsed = run_plan(url, plan, kinds, clients)
    wrong, per_kind = check(outcomes, kinds, alone)
    growth = {"end": load.end / warm.end - 1, "peak": load.peak / warm.peak - 1}
    wrong += [f"RSS {name} grew {value:.1%} over the warm-up's (limit {MAX_RSS_GROWTH:.0%})"
              for name, value in growth.items() if value > MAX_RSS_GROWTH]
    all_seconds = sorted(s for *_, s in outcomes)
    return {"requests": total, "clients": clients, "seconds": elapsed, "requests_per_s": total / elapsed,
            "wrong": wrong, "warm_up": {"requests": warm_up_requests, "seconds": warm_up_s},
            "p50_s": statistics.median(all_seconds), "p95_s": all_seconds[round(0.95 * (total - 1))],
            "rss_mb": {"warm_up_end": warm.end, "warm_up_peak": warm.peak,
                       "load_end": load.end, "load_peak": load.peak, "growth": growth},
            "kinds": per_kind,
            "alive_after": requests.get(f"{url}/is_ready", timeout=10).status_code == 200}


def main(argv=None) -> int:
    parser = server_arguments(__doc__.split("\n\n")[0], clients=32)
    parser.add_argument("--requests", type=int, default=2000, help="requests in all (after the warm-up)")
    parser.add_argument("--warm-up-s", type=float, default=65.0, help="seconds of the same load first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        limit = {"KOSMOS2_MAX_IMAGE_PIXELS": str(MAX_PIXELS)}
        with deployed_server(args.checkpoint, args.device, Path(tmp), limit) as (url, pid):
            report = run_load(url, pid, args.clients, args.requests, args.warm_up_s, seed=0)
    report.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), device=args.device,
                  checkpoint=args.checkpoint or "tiny")
    write_result(report, args.out, f"load-{report['date'][:10]}-{args.device}.json")
    return 1 if report["wrong"] or not report["alive_after"] else 0


if __name__ == "__main__":
    sys.exit(main())
