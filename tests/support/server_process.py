"""The app as a real process: ``uvicorn main:model.app`` on 127.0.0.1, its environment, start
and stop. Used by the end-to-end tests and by ``bench/server_bench.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.app_harness import REPO, TINY_SAM2, read_env_file

# The README test's server log: written while that test runs, beside any other test (xdist).
README_SERVER_LOG = REPO / ".cache" / "readme-server.log"


def server_command(port: int) -> list[str]:
    """What ``make serve`` runs, on ``port``."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "main:model.app",
        "--app-dir",
        "src",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "websockets",
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(tmp_path: Path, checkpoint: str) -> dict[str, str]:
    """The process environment plus local.env, with data under ``tmp_path`` and the tiny model."""
    env = {k: v for k, v in os.environ.items() if k not in ("ENV", "TASK_ID", "DEBUG_WITH_SLY_NET", "AUTOSTART")}
    env.update(read_env_file(REPO / "local.env"))
    env.update(
        DEBUG_APP_DIR=str(tmp_path / "app_data"),
        SLY_APP_DATA_DIR=str(tmp_path / "app_data"),
        SMART_CACHE_CONTAINER_DIR=str(tmp_path / "cache"),
        KOSMOS2_CHECKPOINT=checkpoint,
        KOSMOS2_SAM2=str(TINY_SAM2),
    )
    return env


def wait_until_alive(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/is_alive", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server did not start:\n{log.read_text()[-3000:]}")


def start(command: list[str], env: dict, log: Path, url: str) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_until_alive(url, process, log)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def cli_predict(folder: Path, out: Path, env: dict, *options: str) -> subprocess.CompletedProcess:
    """``python src/main.py predict FOLDER --device cpu --output OUT [options]``, the SDK's CLI as a
    user runs it; its completed process (text output captured)."""
    argv = [sys.executable, "src/main.py", "predict", str(folder), "--device", "cpu", "--output", str(out), *options]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
