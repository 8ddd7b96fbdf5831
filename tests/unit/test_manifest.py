"""The app manifest, the model table, the pins and the Dockerfile agree with each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kosmos2_app.engines import backend_of

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[^=\s]+", line) for line in lines), "every line pinned"
    return {line.split("==")[0].split("[")[0].lower(): line.split("==")[1] for line in lines}


def test_requirements_pin_the_stack():
    pinned = pins()
    assert pinned["torch"] == "2.13.0"
    assert pinned["supervisely"] == "6.74.51"
    assert pinned["transformers"] == "5.23.0"
    assert pinned["ray"] == "2.60.0" and pinned["pyarrow"]  # ray[data], the labelling job


def test_manifest_is_a_serving_app_on_port_8000():
    config = json.loads((REPO / "config.json").read_text())
    assert "uvicorn main:model.app" in config["entrypoint"] and "--app-dir ./src" in config["entrypoint"]
    assert config["port"] == 8000 and config["session_tags"] == ["deployed_nn"]
    assert config["gpu"] in ("preferred", "required") and config["docker_image"].startswith("supervisely/")


def test_dockerfile_matches_the_pinned_sdk_and_bakes_weights():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert f"LABEL python_sdk_version={pins()['supervisely']}" in dockerfile
    assert "requirements.txt" in dockerfile and "download_weights.py" in dockerfile
    assert "KOSMOS2_CHECKPOINT=/weights/" in dockerfile
    rows = json.loads((REPO / "src" / "models.json").read_text())
    sam2s = {hub_id for row in rows for hub_id in row["meta"]["sam2"].values()}
    assert sam2s == {"facebook/sam2.1-hiera-tiny", "facebook/sam2.1-hiera-large"}
    for hub_id in sam2s:  # every row's SAM 2, into the cache where its hub id loads offline
        assert f"download_weights.py --sam2 {hub_id}\n" in dockerfile or f"--sam2 {hub_id} &&" in dockerfile
    assert "ENV HF_HOME=/weights/" in dockerfile
    assert "KOSMOS2_SAM2=" not in dockerfile  # it would stand for every row's choice
    assert "kosmos2_engine.runtime.openvino.export /weights/" in dockerfile  # the IR can be baked too


def test_model_table_rows_have_checkpoints_backends_and_paper_figures(monkeypatch):
    monkeypatch.delenv("KOSMOS2_BACKEND", raising=False)  # it would override every row
    rows = json.loads((REPO / "src" / "models.json").read_text())
    assert [row["meta"]["model_name"] for row in rows] == [
        "Kosmos-2",
        "Kosmos-2 OpenVINO int8",
        "Kosmos-2 OpenVINO int4",
        "Kosmos-2 OpenVINO fp32",
        "Kosmos-2 OpenVINO int8-act",
    ]
    backends = [row["meta"]["backend"] for row in rows]
    assert backends == ["pytorch", "openvino-int8", "openvino-int4", "openvino-fp32", "openvino-int8-act"]
    assert [backend_of(row) for row in rows] == backends  # each row's backend is one a deploy accepts
    for row in rows:
        assert row["meta"]["model_files"]["checkpoint"] == "microsoft/kosmos-2-patch14-224"
        assert row["Flickr30k R@1 (test)"] == 78.7 and row["RefCOCOg acc (test)"] == 61.65
        assert list(row) == list(rows[0])  # one set of columns for the table


def test_the_dockerfile_installs_exactly_the_pins():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in dockerfile
    for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==([^\s\"']+)", dockerfile):
        assert pins()[name.lower()] == version, f"{name}=={version} in the Dockerfile differs from requirements.txt"


def test_publish_pushes_the_image_config_json_names(tmp_path):
    import subprocess

    image = json.loads((REPO / "config.json").read_text())["docker_image"]
    result = subprocess.run(
        ["bash", "docker/publish.sh"],
        cwd=REPO,
        env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"+ docker build -f docker/Dockerfile --build-arg OPENVINO_WEIGHTS=int8 -t {image} ." in result.stdout
    assert f"+ docker push {image}" in result.stdout
