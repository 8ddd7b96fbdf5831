"""Where a labelling job writes: a Supervisely-format project folder.

``<root>/meta.json``, ``<root>/<dataset>/img/<name>`` (the image, unless the job only keeps
annotations), ``<root>/<dataset>/ann/<name>.json``, and beside them the job's own records,
``labelling-failures.jsonl`` and ``labelling-summary.json`` (files at the root, which the SDK
does not read as datasets).

Every file is written under a temporary name in its folder and then published under its final
name with a hard link, which fails when the name exists: a file is either whole or absent, and
no image or annotation is ever written twice, whichever worker or retry gets there first. An
annotation's presence is what marks its image done, so a rerun skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import supervisely as sly

from .sources import Item

TEMP_SUFFIX = ".kosmos2-tmp"
FAILURES = "labelling-failures.jsonl"
SUMMARY = "labelling-summary.json"


def publish(temporary: Path, final: Path) -> bool:
    """Give ``temporary`` the name ``final`` unless that exists. True when it was published;
    False (and ``temporary`` removed) when ``final`` was already there."""
    try:
        os.link(temporary, final)  # atomic, and refuses an existing name
        published = True
    except FileExistsError:
        published = False
    except OSError:  # a file system without hard links: check, then rename
        if final.exists():
            published = False
        else:
            os.replace(temporary, final)
            return True
    temporary.unlink(missing_ok=True)
    return published


def _temporary(final: Path) -> Path:
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


class ProjectOutput:
    """The output project at ``root``; ``keep_images`` False writes annotations only (when they
    are uploaded afterwards, and the images stay where they are)."""

    def __init__(self, root: Path, keep_images: bool = True):
        self.root = Path(root)
        self.keep_images = keep_images

    def image_path(self, item: Item) -> Path:
        return self.root / item.dataset / "img" / item.name

    def annotation_path(self, item: Item) -> Path:
        return self.root / item.dataset / "ann" / f"{item.name}.json"

    def is_done(self, item: Item) -> bool:
        """Whether the item's annotation is written (by this run or an earlier one)."""
        return self.annotation_path(item).is_file()

    def write_image(self, item: Item, data: bytes | None = None) -> bool:
        """The item's image in the project: ``data``, or a hard link to (else a copy of) its
        local file. False when it was there already."""
        final = self.image_path(item)
        if final.exists():
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary(final)
        if data is not None:
            temporary.write_bytes(data)
        else:
            try:
                os.link(item.path, temporary)
            except OSError:
                shutil.copyfile(item.path, temporary)
        return publish(temporary, final)

    def write_annotation(self, item: Item, annotation: dict[str, Any]) -> bool:
        """The item's annotation JSON; False (nothing written) when it was there already."""
        final = self.annotation_path(item)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary(final)
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(annotation, file)
            file.flush()
            os.fsync(file.fileno())
        return publish(temporary, final)

    def read_annotation(self, item: Item) -> dict[str, Any]:
        return json.loads(self.annotation_path(item).read_text(encoding="utf-8"))

    def meta(self) -> sly.ProjectMeta:
        """The project meta written so far (empty when none)."""
        path = self.root / "meta.json"
        return sly.ProjectMeta.from_json(json.loads(path.read_text())) if path.is_file() else sly.ProjectMeta()

    def write_meta(self, meta: sly.ProjectMeta) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._replace(self.root / "meta.json", json.dumps(meta.to_json(), indent=2))

    def ensure_datasets(self, items: list[Item]) -> None:
        """Every dataset folder, with ``img`` and ``ann``, so that the project reads back even
        where no image of a dataset is done yet."""
        for dataset in dict.fromkeys(item.dataset for item in items):
            for part in ("img", "ann") if self.keep_images else ("ann",):
                (self.root / dataset / part).mkdir(parents=True, exist_ok=True)

    def write_failures(self, failures: list[dict[str, Any]]) -> Path:
        path = self.root / FAILURES
        self._replace(path, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
        return path

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.root / SUMMARY
        self._replace(path, json.dumps(summary, indent=2) + "\n")
        return path

    def sweep_temporaries(self) -> int:
        """Remove what a killed worker left under a temporary name; how many."""
        swept = 0
        for path in self.root.glob(f"**/*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            swept += 1
        return swept

    def _replace(self, final: Path, text: str) -> None:
        temporary = _temporary(final)
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, final)
