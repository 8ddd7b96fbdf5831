"""Checks that need a Python process of their own, as a user starts one: what the engine imports,
the hub settings read at import, the Docker image's weight download, ``make gpu-check``'s dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.app_harness import REPO


@pytest.mark.parametrize(
    ("env", "reason"),
    [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"), ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "127.0.0.1:9")],
)
def test_unreachable_hub_fails_fast_with_what_to_set_and_the_engine_imports_nothing_of_supervisely(
    tmp_path, env, reason
):
    """In a new process, as a user sets them: the hub client parses these at import. The same
    process then lists what of Supervisely (or its web stack) the engine brought in: nothing."""
    code = (
        "import sys\n"
        "from kosmos2_engine import Kosmos2Engine\n"
        "from kosmos2_engine.checkpoint import CheckpointError\n"
        "try:\n    Kosmos2Engine.load('microsoft/kosmos-2-patch14-224')\n"
        "except CheckpointError as error:\n    print(error)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'supervisely', 'fastapi'}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], env={**clean, "HF_HOME": str(tmp_path), **env},
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    *message, imported = out.stdout.strip().splitlines()
    assert "KOSMOS2_CHECKPOINT" in out.stdout and reason in "\n".join(message), out.stdout + out.stderr
    assert imported == "[]"
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    "arguments",
    [["microsoft/kosmos-2-patch14-224", "weights"], ["--sam2", "facebook/sam2.1-hiera-large"]],
    ids=["kosmos2", "sam2-into-the-cache"],
)
def test_a_failed_weight_download_fails_the_build(tmp_path, arguments):
    """The hub is out of reach (HF_HUB_OFFLINE, empty cache): the script must exit non-zero,
    leaving no weights behind, so that `docker build` stops (Kosmos-2's weights into a folder,
    SAM 2's into the cache, as the Dockerfile calls it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "download_weights.py"), *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert not list(tmp_path.rglob("*.safetensors"))


def test_gpu_check_dry_run_checks_every_step_without_cuda(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(tmp_path / "results")],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert report["dry_run"] and report["gpu_tests_collected"] == 4
    assert set(report["stack"]) >= {"torch", "transformers", "cuda_available", "differs_from_pins"}
    for step in ("gpu tests", "engine benchmark", "masks benchmark", "video benchmark"):
        assert f"{step}: passed" in result.stdout
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
