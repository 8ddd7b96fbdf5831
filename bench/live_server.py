"""The real app as a server for the HTTP benchmarks: started on 127.0.0.1, deployed, stopped;
the command-line options they share; where their results go."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def server_arguments(description: str, clients: int) -> argparse.ArgumentParser:
    """A parser with ``--checkpoint``, ``--device``, ``--clients`` and ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint", default=None, help="model folder (default: the tiny model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", type=int, default=clients)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return parser


@contextlib.contextmanager
def deployed_server(
    checkpoint: str | None, device: str, folder: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """``uvicorn main:model.app`` (as ``make serve``) with ``checkpoint`` (default: the tiny
    model), deployed on ``device`` with ``ModelAPI.load``; yields its URL and process id,
    stops it after."""
    from supervisely.nn.model.model_api import ModelAPI

    from tests.support.server_process import app_env, free_port, server_command, start, stop
    from tests.tiny_model.locate import tiny_checkpoint_folder

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**app_env(folder, checkpoint or str(tiny_checkpoint_folder())), **(extra_env or {})}
    process = start(server_command(port), env, folder / "server.log", url)
    try:
        ModelAPI(url=url).load("Kosmos-2", device=device)
        yield url, process.pid
    finally:
        stop(process)


def write_result(report: dict, out: Path, name: str) -> Path:
    """Write ``report`` as ``out/name`` and print it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return path
