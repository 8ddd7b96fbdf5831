"""Server benchmark: single-image requests to the real app over HTTP, as Supervisely's labeling
tools send them, one after another and then all at once from concurrent clients (each with the
SDK's own ``Session``). Concurrent requests share model passes through the app's batcher.

    python -m bench.server_bench                         # tiny model, CPU, 32 clients
    python -m bench.server_bench --checkpoint DIR --device cuda --tokens 64

Needs supervisely (not on the GPU image). Prints and writes ``bench/results/server-*.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from bench.live_server import deployed_server, server_arguments, write_result


def parse_args(argv=None) -> argparse.Namespace:
    parser = server_arguments(__doc__.split("\n\n")[0], clients=32)
    parser.add_argument("--tokens", type=int, default=32, help="max_new_tokens per caption")
    return parser.parse_args(argv)


def session(url: str, tokens: int):
    import supervisely as sly

    api = sly.Api("http://127.0.0.1:9", "local-placeholder-token", ignore_task_id=True)
    return sly.nn.inference.Session(api, session_url=url, inference_settings={"max_new_tokens": tokens})


def measure(url: str, paths: list[Path], tokens: int) -> dict:
    clients = [session(url, tokens) for _ in paths]
    clients[0].inference_image_path(str(paths[0]))  # warm-up
    start = time.perf_counter()
    sequential = [clients[0].inference_image_path(str(path)) for path in paths]
    sequential_s = time.perf_counter() - start
    with ThreadPoolExecutor(len(paths)) as pool:
        start = time.perf_counter()
        concurrent = list(pool.map(lambda pair: pair[0].inference_image_path(str(pair[1])), zip(clients, paths)))
        concurrent_s = time.perf_counter() - start
    same = [a.to_json() == b.to_json() for a, b in zip(sequential, concurrent)]
    return {
        "clients": len(paths),
        "sequential_s": sequential_s,
        "concurrent_s": concurrent_s,
        "speedup": sequential_s / concurrent_s,
        "identical_annotations": sum(same),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = [Path(tmp) / f"image_{i}.png" for i in range(args.clients)]
        for path in paths:
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)
        with deployed_server(args.checkpoint, args.device, Path(tmp)) as (url, _):
            result = measure(url, paths, args.tokens)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": args.device,
        "checkpoint": args.checkpoint or "tiny",
        "max_new_tokens": args.tokens,
        **result,
    }
    write_result(report, args.out, f"server-{report['date'][:10]}-{args.device}.json")
    return report


if __name__ == "__main__":
    main()
