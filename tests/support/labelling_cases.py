"""Shared cases of the labelling tests: generated images as files and as a fake Supervisely
project, and the server's own annotations of them (the reference every job must match)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.support.app_harness import infer_image, png_bytes
from tests.support.fake_supervisely import FakeSupervisely
from tests.support.helpers import canonical, scene, two_shapes

BAD_FILES = {
    "truncated.png": lambda: png_bytes(scene(7, 64, 48)[0])[:60],
    "notes.jpg": lambda: b"these are not the pixels you are looking for",
    "empty.png": lambda: b"",
}


def generated_images(count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` reproducible scenes of various sizes, one or two shapes each, named by seed."""
    images = []
    for seed in range(count):
        if seed % 2:
            image = two_shapes(500 + seed, 120 + 8 * (seed % 5), 90 + 6 * (seed % 4), None)[0]
        else:
            image = scene(600 + seed, 64 + 10 * (seed % 7), 48 + 12 * (seed % 3))[0]
        images.append((f"scene_{seed:03d}.png", image))
    return images


def write_folder(root: Path, images: list[tuple[str, np.ndarray]], bad: bool = False) -> Path:
    """The images as PNG files under ``root`` (the first half in a subfolder ``more``), plus
    unreadable files when ``bad``."""
    for index, (name, image) in enumerate(images):
        folder = root / "more" if index >= len(images) // 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png_bytes(image))
    if bad:
        for name, data in BAD_FILES.items():
            (root / name).write_bytes(data())
    return root


def write_project_folder(root: Path, images: list[tuple[str, np.ndarray]]) -> Path:
    """A Supervisely-format project of the images (two datasets, the second nested in the
    first), with empty annotations, as the SDK writes one."""
    import supervisely as sly

    project = sly.Project(str(root), sly.OpenMode.CREATE)
    outer = project.create_dataset("outer")
    inner = project.create_dataset("inner", ds_path=str(Path("outer") / "datasets" / "inner"))
    for index, (name, image) in enumerate(images):
        dataset = inner if index % 3 == 0 else outer
        path = root / "upload.png"
        path.write_bytes(png_bytes(image))
        dataset.add_item_file(name, str(path), ann=sly.Annotation(image.shape[:2]))
        path.unlink()
    return root


def fake_project(images: list[tuple[str, np.ndarray]], with_bad: bool = False) -> FakeSupervisely:
    """Project 1 of two datasets (``field`` and ``field/datasets/north``), the images split
    between them, as a stand-in Supervisely instance."""
    rows = {11: [], 12: []}
    for index, (name, image) in enumerate(images):
        rows[11 if index % 2 else 12].append((100 + index, name, png_bytes(image)))
    if with_bad:
        rows[11].append((999, "truncated.png", BAD_FILES["truncated.png"]()))
        rows[11].append((998, "../escape.png", png_bytes(images[0][1])))
    return FakeSupervisely(1, {11: ("field", None), 12: ("north", 11)}, rows)


def server_annotations(client, images: list[tuple[str, np.ndarray]], settings: dict) -> dict[str, str]:
    """``{name: canonical annotation}`` the deployed server returns for each image."""
    found = {}
    for name, image in images:
        response = infer_image(client, image, **settings)
        assert response.status_code == 200, response.text
        found[name] = canonical(response.json()["annotation"])
    return found


def written_annotations(root: Path) -> dict[str, str]:
    """``{image name: canonical annotation}`` of every annotation file under ``root``."""
    return {path.name[: -len(".json")]: canonical(json.loads(path.read_text())) for path in root.glob("**/ann/*.json")}
