"""Load test: many clients at once against the real server, good and bad requests mixed.

Every distinct good request (a task on an image of some size) is first sent alone; under load,
each must get a 200 with the same annotation (no cross-talk between requests; confidences to
4 decimals), and each bad one (garbage bytes, an oversized image, bad settings, a region
outside the image) its 400. Every upload has the same file name, ``image.png``, and requests
go three ways: ``/inference_image`` (one image), ``/inference_batch`` (two images of one task,
both called ``image.png``) and ``ModelAPI.predict`` (a file ``image.png`` in a folder per
kind, through ``/inference_batch_async``): names must never mix answers up.
After a warm-up of the same mix (65 s: the server drops finished
requests after 60 s), the server's RSS, at its peak and at the end, may grow by at most 10 %.
The server must still answer afterwards. Reports throughput and p50/p95 latency per kind.

    python -m bench.load_test                       # tiny model, CPU, 32 clients, 2000 requests
    python -m bench.load_test --clients 8 --requests 200

Writes ``bench/results/load-<date>-<device>.json``; exits 1 if any check fails.
"""

from __future__ import annotations

import io
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests
from PIL import Image
from supervisely import logger as sly_logger
from supervisely.nn.model.model_api import ModelAPI

from bench.live_server import deployed_server, server_arguments, write_result
from bench.memory import status_mb
from tests.support.helpers import canonical

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
    kinds = {
        f"{task}/{size}": (images[size], settings, 200) for task, settings in GOOD_SETTINGS.items() for size in SIZES
    }
    kinds.update(
        {
            "bad/garbage_bytes": (rng.bytes(2048), {}, 400),
            "bad/oversized": (png(np.zeros((2500, 2000, 3), np.uint8)), {}, 400),
            "bad/max_new_tokens": (images["small"], {"max_new_tokens": -3}, 400),
            "bad/region_outside": (images["small"], {"task": "region_description", "regions": [[0, 0, 500, 500]]}, 400),
        }
    )
    return kinds


ROUTES = {"image": 0.6, "batch": 0.25, "model_api": 0.15}  # share of the requests


def send(url: str, route: str, batch: tuple[str, ...], kinds: dict, folder: Path) -> list:
    """One request of the kinds in ``batch`` over ``route``: per kind (kind, status, canonical
    annotation or None, seconds). Every file is called ``image.png``."""
    settings = kinds[batch[0]][1]
    start = time.perf_counter()
    if route == "model_api":
        [kind] = batch
        try:
            [prediction] = ModelAPI(url=url).predict(
                input=str(folder / kind.replace("/", "_") / "image.png"),
                inference_settings=settings,
                show_progress=False,
            )
            status, annotations = 200, [prediction.annotation.to_json()]
        except Exception as error:  # noqa: BLE001 - reported as a wrong answer
            status, annotations = getattr(getattr(error, "response", None), "status_code", 599), [None]
    else:
        files = [("files", ("image.png", kinds[kind][0], "image/png")) for kind in batch]
        response = requests.post(
            f"{url}/inference_{route}", files=files, data={"settings": json.dumps({"settings": settings})}, timeout=300
        )
        status = response.status_code
        body = response.json() if status == 200 else None
        results = [body] if route == "image" and body is not None else (body or [None] * len(batch))
        annotations = [result["annotation"] if result else None for result in results]
    seconds = time.perf_counter() - start
    return [
        (kind, status, None if annotation is None else canonical(annotation), seconds)
        for kind, annotation in zip(batch, annotations)
    ]


def plan_requests(kinds: dict, count: int, rng: random.Random) -> list[tuple[str, tuple[str, ...]]]:
    """``count`` requests: (route, kinds). A batch holds two good kinds of one task (one
    settings object per request), or one bad kind; ModelAPI takes good kinds only."""
    good = [kind for kind, (_, _, code) in kinds.items() if code == 200]
    plan = []
    for _ in range(count):
        route = rng.choices(list(ROUTES), weights=list(ROUTES.values()))[0]
        kind = rng.choice(list(kinds) if route != "model_api" else good)
        if route == "batch" and kind in good:
            task = kind.split("/")[0]
            plan.append((route, (kind, rng.choice([k for k in good if k.startswith(task + "/")]))))
        else:
            plan.append((route, (kind,)))
    return plan


def run_plan(url: str, plan: list, kinds: dict, clients: int, folder: Path) -> tuple[list, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [o for batch in pool.map(lambda item: send(url, *item, kinds, folder), plan) for o in batch]
    return outcomes, time.perf_counter() - start


def check(outcomes: list, kinds: dict, alone: dict[str, str]) -> tuple[list[str], dict]:
    """Wrong answers, and count / p50 / p95 latency per kind."""
    wrong, per_kind = [], {}
    for kind, (_, _, expected) in kinds.items():
        mine = [(status, annotation, s) for k, status, annotation, s in outcomes if k == kind]
        wrong += [f"{kind}: status {status}" for status, _, _ in mine if status != expected]
        wrong += [
            f"{kind}: annotation differs from the request alone"
            for status, annotation, _ in mine
            if status == 200 and annotation != alone.get(kind)
        ]
        latencies = sorted(s for _, _, s in mine)
        if latencies:
            per_kind[kind] = {
                "count": len(mine),
                "expected_status": expected,
                "p50_s": statistics.median(latencies),
                "p95_s": latencies[round(0.95 * (len(latencies) - 1))],
            }
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

    def __enter__(self) -> RssSampler:
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


def warm_up(url: str, kinds: dict, clients: int, seconds: float, rng: random.Random, folder: Path) -> int:
    """The same mix of requests for at least ``seconds`` (long enough for the server to drop
    finished requests, 60 s after them: its steady state). Returns how many were sent."""
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        run_plan(url, plan_requests(kinds, clients * 4, rng), kinds, clients, folder)
        sent += clients * 4
    return sent


def write_kind_files(kinds: dict, folder: Path) -> None:
    """Each kind's image as ``<folder>/<kind>/image.png`` (for ``ModelAPI.predict``)."""
    for kind, (data, _, _) in kinds.items():
        (folder / kind.replace("/", "_")).mkdir(parents=True)
        (folder / kind.replace("/", "_") / "image.png").write_bytes(data)


def run_load(url: str, pid: int, clients: int, total: int, warm_up_s: float, seed: int, folder: Path) -> dict:
    kinds = request_kinds(seed)
    write_kind_files(kinds, folder)
    alone = {
        kind: send(url, "image", (kind,), kinds, folder)[0][2] for kind, (_, _, code) in kinds.items() if code == 200
    }
    rng = random.Random(seed)
    with RssSampler(pid) as warm:
        warm_up_requests = warm_up(url, kinds, clients, warm_up_s, rng, folder)
    plan = plan_requests(kinds, total, rng)
    with RssSampler(pid) as load:
        outcomes, elapsed = run_plan(url, plan, kinds, clients, folder)
    wrong, per_kind = check(outcomes, kinds, alone)
    growth = {"end": load.end / warm.end - 1, "peak": load.peak / warm.peak - 1}
    wrong += [
        f"RSS {name} grew {value:.1%} over the warm-up's (limit {MAX_RSS_GROWTH:.0%})"
        for name, value in growth.items()
        if value > MAX_RSS_GROWTH
    ]
    all_seconds = sorted(s for *_, s in outcomes)
    routes = {route: sum(1 for r, _ in plan if r == route) for route in ROUTES}
    return {
        "requests": total,
        "routes": routes,
        "images": len(outcomes),
        "file_name": "image.png (all)",
        "clients": clients,
        "seconds": elapsed,
        "requests_per_s": total / elapsed,
        "wrong": wrong,
        "warm_up": {"requests": warm_up_requests, "seconds": warm_up_s},
        "p50_s": statistics.median(all_seconds),
        "p95_s": all_seconds[round(0.95 * (total - 1))],
        "rss_mb": {
            "warm_up_end": warm.end,
            "warm_up_peak": warm.peak,
            "load_end": load.end,
            "load_peak": load.peak,
            "growth": growth,
        },
        "kinds": per_kind,
        "alive_after": requests.get(f"{url}/is_ready", timeout=10).status_code == 200,
    }


def main(argv=None) -> int:
    parser = server_arguments(__doc__.split("\n\n")[0], clients=32)
    parser.add_argument("--requests", type=int, default=2000, help="requests in all (after the warm-up)")
    parser.add_argument("--warm-up-s", type=float, default=65.0, help="seconds of the same load first")
    args = parser.parse_args(argv)
    sly_logger.setLevel(logging.WARNING)  # ModelAPI logs every request's stages at info
    with tempfile.TemporaryDirectory() as tmp:
        limit = {"KOSMOS2_MAX_IMAGE_PIXELS": str(MAX_PIXELS)}
        with deployed_server(args.checkpoint, args.device, Path(tmp), limit) as (url, pid):
            report = run_load(url, pid, args.clients, args.requests, args.warm_up_s, seed=0, folder=Path(tmp) / "files")
    report.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"), device=args.device, checkpoint=args.checkpoint or "tiny"
    )
    write_result(report, args.out, f"load-{report['date'][:10]}-{args.device}.json")
    return 1 if report["wrong"] or not report["alive_after"] else 0


if __name__ == "__main__":
    sys.exit(main())
