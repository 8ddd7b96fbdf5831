"""Where a single-image request's time goes: py-spy samples the real server (old and new path)
while one client sends single-image requests one after another, and a summary of the busy
samples per thread and per function is written to ``bench/results/profile-<date>.md``.

    python -m bench.profile_server              # make profile-server (needs py-spy and ptrace)
    python -m bench.profile_server --baseline a6a70e1 --requests 400
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench.live_server import REPO
from bench.server_bench import BASELINE, SETTINGS, baseline_tree, log, sample_jpeg, server

# Leaf frames of a thread that waits rather than works.
IDLE = ("select (selectors", "wait (threading", "_worker (concurrent", "monitor (", "get (queue", "worker (anyio",
        "sleep", "Runner.run (asyncio", "_run_once (asyncio")  # fmt: skip


ENGINE_THREADS = ("kosmos2-engine", "kosmos2-batcher")  # the thread that runs the model, new and old name


def busy_stacks(raw: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames, samples) of every stack whose leaf is working."""
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # a line py-spy cut short when it stopped
            continue
        frames = stack.split(";")
        if any(marker in frames[-1] for marker in IDLE):
            continue
        thread = frames[0].rpartition("): ")[2] or frames[0]
        names = [re.sub(r":\d+\)$", ")", re.sub(r" \(.*?/(site-packages|src)/", " (", f)) for f in frames[1:]]
        stacks.append((thread, names, int(count)))
    return stacks


def summary(raw: Path, requests_sent: int, seconds: float, top: int = 25) -> str:
    stacks = busy_stacks(raw)
    per_thread = collections.Counter()
    inclusive = collections.Counter()
    for thread, names, count in stacks:
        per_thread[thread] += count
        for name in set(names):
            inclusive[(thread in ENGINE_THREADS, name)] += count
    total = sum(per_thread.values())
    lines = [f"{requests_sent} requests in {seconds:.1f} s ({seconds / requests_sent * 1e3:.1f} ms each under the "
             f"profiler); {total} busy samples.", "", "| thread | busy samples | share |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {thread} | {count} | {count / total:.0%} |" for thread, count in per_thread.most_common(6)]
    for engine_side, title in ((False, "Request path (every thread but the engine's)"), (True, "Engine thread")):
        side_total = sum(c for t, c in per_thread.items() if (t in ENGINE_THREADS) == engine_side) or 1
        rows = [(name, count) for (side, name), count in inclusive.most_common() if side == engine_side]
        rows = [(name, count) for name, count in rows if "(threading.py)" not in name and "runpy" not in name]
        lines += ["", f"**{title}**, inclusive samples of its busy total ({side_total}):", "",
                  "| function | share |", "|---|---|"]  # fmt: skip
        lines += [f"| `{name[:110]}` | {count / side_total:.0%} |" for name, count in rows[:top]]
    return "\n".join(lines)


def profile(url: str, pid: int, data: bytes, count: int, out: Path) -> tuple[Path, float]:
    session = requests.Session()
    for _ in range(20):
        session.post(f"{url}/inference_image", files={"files": ("a.jpg", data)}, data={"settings": SETTINGS})
    raw = out / f"py-spy-{pid}.txt"
    spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", "500", "-f", "raw", "-o", str(raw), "--threads",
                            "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1.0)
    started = time.perf_counter()
    for _ in range(count):
        session.post(f"{url}/inference_image", files={"files": ("a.jpg", data)}, data={"settings": SETTINGS})
    seconds = time.perf_counter() - started
    spy.send_signal(2)  # SIGINT: py-spy writes what it has
    spy.wait(timeout=60)
    return raw, seconds


def server_pid(port_url: str) -> int:
    port = port_url.rsplit(":", 1)[1]
    out = subprocess.run(["bash", "-c", f"pgrep -f 'port {port}' | head -1"], capture_output=True, text=True)
    return int(out.stdout.strip())


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    from tests.tiny_model.locate import tiny_checkpoint_folder

    checkpoint, data = str(tiny_checkpoint_folder()), sample_jpeg()
    sections = []
    with tempfile.TemporaryDirectory() as tmp, baseline_tree(args.baseline) as old_src:
        for name, src in ((f"old path ({args.baseline})", old_src), ("new path", REPO / "src")):
            log(f"profiling the {name}")
            with server(src, Path(tmp) / name.split()[0], checkpoint) as url:
                raw, seconds = profile(url, server_pid(url), data, args.requests, Path(tmp))
                sections.append(f"## {name}\n\n{summary(raw, args.requests, seconds)}")
    date = datetime.now(UTC).isoformat(timespec="seconds")
    text = (f"# Single-image requests, profiled\n\n{date}, tiny model on CPU, one client sending a 640x480 JPEG "
            "with `max_new_tokens=1` one request after another, py-spy sampling the server at 500 Hz "
            "(`python -m bench.profile_server`). The profiler slows every request down; compare shares, not "
            "times.\n\n" + "\n\n".join(sections) + "\n")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"profile-{date[:10]}.md"
    path.write_text(text)
    log(f"written {path}")
    return path


if __name__ == "__main__":
    main()
