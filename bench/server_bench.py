"""The serving path against the engine alone, old and new side by side in one run.

Three servers run at once on 127.0.0.1 with the tiny model and ``max_new_tokens=1`` (so that the
model's own work is small and the serving path shows): the **old** path (the app at
``--baseline``, by default the revision before the serving-path work, whose uploads went
through the SDK's own routes and request bookkeeping), the **new** path (this tree), and the
new path with a 5 ms batch wait (``KOSMOS2_BATCH_WAIT_MS=5``, to see whether waiting for
company helps). The engine alone runs in this process on the same decoded image. Every
measurement alternates between them in rounds, so that drift of this machine falls on all
alike; medians are reported.

* lone requests: one client, one image per request, one after another: latency, and the
  overhead over the engine alone;
* 16 concurrent single-image clients: requests per second;
* ``/inference_batch`` with 16 images: the overhead per image over the engine running the 16.

    python -m bench.server_bench                   # make bench-server
    python -m bench.server_bench --baseline HEAD~3 --rounds 8

Writes ``bench/results/server-<date>-cpu.json``. Needs git (for the baseline worktree).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench.live_server import REPO, write_result

BASELINE = "fe2436a"  # the app before this work: the SDK's own upload routes
SETTINGS = json.dumps({"settings": {"max_new_tokens": 1}})


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def sample_jpeg() -> bytes:
    """A 640x480 JPEG of two shapes (13 KB): what a labeling tool sends, in size."""
    from tests.tiny_model.scenes import draw_two_shapes

    image, _ = draw_two_shapes(random.Random(5), 640, 480)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@contextlib.contextmanager
def server(src: Path, folder: Path, checkpoint: str, extra_env: dict | None = None):
    """``uvicorn main:model.app --app-dir src`` from ``src``, deployed; yields its URL."""
    from supervisely.nn.model.model_api import ModelAPI

    from tests.support.server_process import app_env, free_port, start, stop

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "main:model.app", "--app-dir", str(src), "--host", "127.0.0.1",
               "--port", str(port), "--ws", "websockets"]  # fmt: skip
    folder.mkdir(parents=True)
    env = {**app_env(folder, checkpoint), **(extra_env or {})}
    process = start(command, env, folder / "server.log", url)
    try:
        ModelAPI(url=url).load("Kosmos-2", device="cpu")
        yield url
    finally:
        stop(process)


@contextlib.contextmanager
def baseline_tree(revision: str):
    """A worktree of the repository at ``revision``; its ``src`` folder."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield tree / "src"
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def median_ms(function, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def post_images(session: requests.Session, url: str, route: str, data: bytes, count: int) -> requests.Response:
    files = [("files", (f"image_{i}.jpg", data, "image/jpeg")) for i in range(count)]
    response = session.post(f"{url}/{route}", files=files, data={"settings": SETTINGS}, timeout=120)
    response.raise_for_status()
    return response


def concurrent_rps(url: str, data: bytes, clients: int, per_client: int) -> float:
    def client(_):
        session = requests.Session()
        for _ in range(per_client):
            post_images(session, url, "inference_image", data, 1)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return clients * per_client / (time.perf_counter() - started)


def measure(urls: dict[str, str], engine_run, data: bytes, rounds: int) -> dict:
    """Every measurement, alternating between the servers (and the engine alone) in rounds."""
    sessions = {name: requests.Session() for name in urls}
    lone = {name: [] for name in [*urls, "engine"]}
    batch = {name: [] for name in [*urls, "engine"]}
    rps = {name: [] for name in urls}
    for name, url in urls.items():  # warm every path up
        for _ in range(20):
            post_images(sessions[name], url, "inference_image", data, 1)
        post_images(sessions[name], url, "inference_batch", data, 16)
        concurrent_rps(url, data, 16, 2)
    for round_ in range(rounds):
        log(f"round {round_ + 1}/{rounds}")
        lone["engine"].append(median_ms(lambda: engine_run(1), 30))
        batch["engine"].append(median_ms(lambda: engine_run(16), 7))
        for name, url in urls.items():
            session = sessions[name]
            lone[name].append(median_ms(lambda s=session, u=url: post_images(s, u, "inference_image", data, 1), 30))
            batch[name].append(median_ms(lambda s=session, u=url: post_images(s, u, "inference_batch", data, 16), 7))
            rps[name].append(concurrent_rps(url, data, 16, 12))
    return {"lone_ms": lone, "batch16_ms": batch, "concurrent16_rps": rps}


def summarise(raw: dict) -> dict:
    lone = {name: statistics.median(values) for name, values in raw["lone_ms"].items()}
    batch = {name: statistics.median(values) for name, values in raw["batch16_ms"].items()}
    rps = {name: statistics.median(values) for name, values in raw["concurrent16_rps"].items()}
    servers = [name for name in lone if name != "engine"]
    return {
        "lone_request": {
            "engine_alone_ms": lone["engine"],
            **{f"{name}_ms": lone[name] for name in servers},
            **{f"{name}_overhead_ms": lone[name] - lone["engine"] for name in servers},
            "old_over_new": lone["old"] / lone["new"],
        },
        "concurrent_16_clients": {
            **{f"{name}_requests_per_s": rps[name] for name in servers},
            "new_over_old": rps["new"] / rps["old"],
        },  # fmt: skip
        "batch_16_images": {
            "engine_alone_ms": batch["engine"],
            **{f"{name}_ms": batch[name] for name in servers},
            **{f"{name}_overhead_per_image_ms": (batch[name] - batch["engine"]) / 16 for name in servers},
        },
    }


def engine_runner(checkpoint: str, data: bytes):
    """``run(n)``: ``Kosmos2Engine.run`` alone on ``n`` copies of the decoded image,
    ``max_new_tokens=1``. Loaded in a thread that ends, so that only this thread runs torch
    (as only the engine thread does in the server)."""
    from kosmos2_engine import Kosmos2Engine, policy_from_settings
    from supervisely_io.images import decode_image

    holder: dict = {}
    loader = threading.Thread(target=lambda: holder.update(engine=Kosmos2Engine.load(checkpoint)))
    loader.start()
    loader.join()
    engine, image = holder["engine"], decode_image(data, 10**8)
    policy = policy_from_settings({"max_new_tokens": 1})
    engine.run([image], policy)
    return lambda count: engine.run([image] * count, policy)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old path")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    from tests.tiny_model.locate import tiny_checkpoint_folder

    checkpoint = str(tiny_checkpoint_folder())
    data = sample_jpeg()
    with tempfile.TemporaryDirectory() as tmp, baseline_tree(args.baseline) as old_src:
        log(f"starting the old path ({args.baseline}), the new path, and the new path with a 5 ms wait")
        with (
            server(old_src, Path(tmp) / "old", checkpoint) as old,
            server(REPO / "src", Path(tmp) / "new", checkpoint) as new,
            server(REPO / "src", Path(tmp) / "wait", checkpoint, {"KOSMOS2_BATCH_WAIT_MS": "5"}) as waiting,
        ):
            engine_run = engine_runner(checkpoint, data)
            raw = measure({"old": old, "new": new, "new_wait_5ms": waiting}, engine_run, data, args.rounds)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": "cpu",
        "checkpoint": "tiny",
        "image": "640x480 JPEG, 13 KB",
        "max_new_tokens": 1,
        "baseline": args.baseline,
        **summarise(raw),
        "raw": raw,
    }
    write_result(report, args.out, f"server-{report['date'][:10]}-cpu.json")
    return report


if __name__ == "__main__":
    main()
