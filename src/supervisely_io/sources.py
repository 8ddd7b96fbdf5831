"""What a labelling job reads: the images of a local folder, of a Supervisely-format project
folder, or of a Supervisely project or dataset by id, each listed as an :class:`Item`.

An item's place in the output project mirrors its source: a folder's images become a dataset
named after the folder (a subfolder, a dataset nested in it); a project's datasets keep their
names and nesting (``parent/datasets/child``, the SDK's layout on disk). Names come from the
source, which may be hostile (a remote image called ``../../x``): an item whose name cannot be
a file name is listed with its :attr:`Item.problem` and never read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
NESTED = "datasets"  # the SDK's folder of nested datasets inside a dataset folder
_BAD_NAME = re.compile(r"[/\\\x00-\x1f]")
_SUPERVISELY_SOURCE = re.compile(r"^(project|dataset):(\d+)$")


def default_api_factory(retry_count: int = 10):
    """``supervisely.Api.from_env()``: ``SERVER_ADDRESS`` and ``API_TOKEN``; a failed call is
    tried ``retry_count`` times."""
    import supervisely as sly

    return sly.Api.from_env(retry_count=retry_count)


def supervisely_source(source: str) -> tuple[str, int] | None:
    """``("project" | "dataset", id)`` for a Supervisely source (``project:<id>``,
    ``dataset:<id>``), else ``None`` (a local folder)."""
    match = _SUPERVISELY_SOURCE.match(source.strip())
    return (match.group(1), int(match.group(2))) if match else None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file or folder name in the output, or ``None`` when it can."""
    if _BAD_NAME.search(name):
        return f"the name {name!r} holds a path separator or a control character"
    if not name or name.startswith("."):
        return f"the name {name!r} is empty or starts with a dot"
    if len(name.encode("utf-8")) > 200:
        return "the name is longer than 200 bytes"
    return None


@dataclass(frozen=True)
class Item:
    """One image to label.

    Attributes:
        dataset: its dataset's folder in the output project, relative (``"photos"``,
            ``"photos/datasets/2024"``).
        name: its file name there (``<dataset>/img/<name>``, ``<dataset>/ann/<name>.json``).
        path: the local file it is read from ("" for a remote image).
        image_id: the remote image's id (0 for a local file).
        dataset_id: the remote image's dataset id (0 for a local file).
    """

    dataset: str
    name: str
    path: str = ""
    image_id: int = 0
    dataset_id: int = 0

    @property
    def key(self) -> str:
        """``<dataset>/<name>``: unique in a job."""
        return f"{self.dataset}/{self.name}"

    @property
    def problem(self) -> str | None:
        """Why this item cannot be written (a hostile or unusable name), or ``None``."""
        parts = self.dataset.split("/")
        if any(part != NESTED for part in parts[1::2]):
            return f"the dataset {self.dataset!r} holds a path separator"
        for part in [*parts[0::2], self.name]:
            problem = name_problem(part)
            if problem:
                return problem
        return None

    def row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "name": self.name, "path": self.path,
                "image_id": self.image_id, "dataset_id": self.dataset_id}  # fmt: skip

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Item:
        return cls(str(row["dataset"]), str(row["name"]), str(row["path"]), int(row["image_id"]),
                   int(row["dataset_id"]))  # fmt: skip


def nested(parts: list[str]) -> str:
    """The output folder of a dataset nested as ``parts`` (outermost first)."""
    return f"/{NESTED}/".join(parts)


def is_project_folder(root: Path) -> bool:
    """A Supervisely-format project: a ``meta.json`` beside its dataset folders."""
    return (root / "meta.json").is_file()


def folder_items(root: Path) -> list[Item]:
    """Every image under ``root`` (hidden files and folders left out), sorted: the images of a
    folder form one dataset, named after ``root`` and nested like the subfolders."""
    items = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        relative = Path(directory).relative_to(root)
        dataset = nested([root.resolve().name, *relative.parts])
        items += [
            Item(dataset, name, str(Path(directory) / name))
            for name in sorted(files)
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
        ]
    return items


def project_items(root: Path) -> list[Item]:
    """Every image of a Supervisely-format project folder: each folder with an ``img`` folder is
    a dataset, kept at the same place."""
    items = []
    for img_dir in sorted(root.glob("**/img")):
        if not img_dir.is_dir():
            continue
        dataset = img_dir.parent.relative_to(root).as_posix()
        items += [Item(dataset, p.name, str(p)) for p in sorted(img_dir.iterdir()) if p.is_file()]
    return items


def local_items(root: Path) -> list[Item]:
    """A project folder's images, or a plain folder's (see :func:`folder_items`)."""
    if not root.is_dir():
        raise FileNotFoundError(f"No folder {root}: name a folder of images or a Supervisely project folder.")
    root = root.resolve()
    return project_items(root) if is_project_folder(root) else folder_items(root)


def remote_items(api, project_id: int | None = None, dataset_id: int | None = None) -> Iterator[Item]:
    """The images of Supervisely project ``project_id``, or of dataset ``dataset_id`` and the
    datasets nested in it, through ``api`` (a ``supervisely.Api``)."""
    if dataset_id is not None:
        project_id = api.dataset.get_info_by_id(dataset_id).project_id
    for parents, dataset in api.dataset.tree(project_id, dataset_id=dataset_id):
        folder = nested([*parents, dataset.name])
        for image in api.image.get_list(dataset.id):
            yield Item(folder, image.name, image_id=image.id, dataset_id=dataset.id)


def read_local(item: Item, max_bytes: int) -> bytes:
    """The bytes of a local item; ``ValueError`` for a file over ``max_bytes``."""
    size = os.path.getsize(item.path)
    if size > max_bytes:
        raise ValueError(f"the file has {size} bytes, more than the {max_bytes} read per image")
    return Path(item.path).read_bytes()


def read_remote(items: list[Item], api_factory: Callable[[], Any]) -> list[bytes]:
    """The bytes of remote items, one download per dataset."""
    api, found = api_factory(), dict[int, bytes]()
    for dataset_id in dict.fromkeys(item.dataset_id for item in items):
        ids = [item.image_id for item in items if item.dataset_id == dataset_id]
        found.update(zip(ids, api.image.download_bytes(dataset_id, ids)))
    return [found[item.image_id] for item in items]
