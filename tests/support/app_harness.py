"""Building the Supervisely app in-process for tests: environment, argv and SDK singletons."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TINY_SAM2 = REPO / "tests" / "tiny_sam2" / "checkpoint"  # the SAM 2 that masks: true uses in tests


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blanks skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip().strip('"')
    return pairs


@contextlib.contextmanager
def app_environment(tmp_path: Path, checkpoint: str):
    """The environment of a local run (local.env), with data dirs under ``tmp_path``, the tiny
    checkpoint, a clean ``sys.argv`` (the SDK parses it) and fresh SDK singletons. Yields the
    ``MonkeyPatch`` that undoes all of it, for further changes inside the block."""
    from supervisely.app.singleton import Singleton

    env = read_env_file(REPO / "local.env")
    env.update(
        DEBUG_APP_DIR=str(tmp_path / "app_data"),
        SLY_APP_DATA_DIR=str(tmp_path / "app_data"),
        SMART_CACHE_CONTAINER_DIR=str(tmp_path / "cache"),
        KOSMOS2_CHECKPOINT=checkpoint,
        KOSMOS2_SAM2=str(TINY_SAM2),
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ENV", "TASK_ID", "DEBUG_WITH_SLY_NET", "AUTOSTART", "modal.state.autostart"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(sys, "argv", ["serve-kosmos-2-tests"])
        Singleton._instances.clear()
        Singleton._nested_instances.clear()
        try:
            yield patch
        finally:
            Singleton._instances.clear()
            Singleton._nested_instances.clear()


def client_for(model) -> TestClient:
    return TestClient(model.app.get_server(), raise_server_exceptions=False, client=("127.0.0.1", 50000))


def deploy_on_cpu(client: TestClient):
    return client.post(
        "/deploy_from_api",
        json={
            "state": {"deploy_params": {"model_source": "Pretrained models", "device": "cpu"}, "model_name": "Kosmos-2"}
        },
    )


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def infer_image(client: TestClient, image: np.ndarray, **settings):
    """POST /inference_image the way ``Session.inference_image_path`` sends it."""
    return client.post(
        "/inference_image",
        files=[("files", ("scene.png", png_bytes(image), "image/png"))],
        data={"settings": json.dumps({"settings": settings})},
    )


def rectangles(annotation_json: dict) -> list[dict]:
    """``{"class", "tlbr", "confidence"}`` of each rectangle of a Supervisely annotation JSON."""
    found = []
    for obj in annotation_json["objects"]:
        (left, top), (right, bottom) = obj["points"]["exterior"]
        confidence = [tag["value"] for tag in obj.get("tags", []) if tag["name"] == "confidence"]
        found.append(
            {
                "class": obj["classTitle"],
                "geometry": obj["geometryType"],
                "tlbr": (top, left, bottom, right),
                "confidence": confidence,
            }
        )
    return found


def label_tlbr(label) -> tuple[int, int, int, int]:
    """Inclusive pixel [top, left, bottom, right] of a ``sly.Label`` with a Rectangle."""
    box = label.geometry
    return box.top, box.left, box.bottom, box.right
