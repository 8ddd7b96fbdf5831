"""Uploading a labelling job's annotations into Supervisely, as the SDK's upload modes do:

- ``create``: a new project beside the source (same workspace, "<source> (Kosmos-2)"), with the
  same datasets and nesting; the images are copied by id (no transfer), then annotated.
- ``append``: the labels and tags are added to each source image's annotation.
- ``replace``: each source image's annotation is replaced.

The driver uploads in batches of :data:`BATCH` after the labelling, from the annotations on
disk, and records every uploaded batch in ``labelling-upload.json``: a rerun uploads only what is
not recorded yet, into the same project (at most the batch in flight when a run died is sent
again). Classes and tags the target project already has under the same name with another
shape or value type are uploaded under the name with :data:`SUFFIX`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import supervisely as sly

from .output import ProjectOutput
from .sources import Item

BATCH = 50
SUFFIX = " (Kosmos-2)"
STATE = "labelling-upload.json"
UPLOADED_LOG = "labelling-uploaded.txt"


def upload_project(job, output: ProjectOutput, items: list[Item], progress: Callable[[str], None]) -> dict[str, Any]:
    """Upload the done annotations of ``items`` (remote items of ``job.source``) per
    ``job.upload``; what was uploaded: the target project id and counts."""
    api = job.api_factory()
    state = _State(output.root / STATE, job.upload)
    source_project = _source_project(api, items)
    target = state.project_id or _target_project(api, job.upload, source_project)
    state.project_id = target
    state.save()
    ours = output.meta()
    target_meta, classes, tags = merged_meta(sly.ProjectMeta.from_json(api.project.get_meta(target)), ours)
    api.project.update_meta(target, target_meta)
    to_upload = [item for item in items if output.is_done(item) and item.key not in state.uploaded]
    for dataset_id in dict.fromkeys(item.dataset_id for item in to_upload):
        in_dataset = [item for item in to_upload if item.dataset_id == dataset_id]
        for start in range(0, len(in_dataset), BATCH):
            batch = in_dataset[start : start + BATCH]
            anns = [renamed(sly.Annotation.from_json(output.read_annotation(i), ours), classes, tags) for i in batch]
            _upload_batch(api, job.upload, state, dataset_id, batch, anns, target_meta)
            state.record([item.key for item in batch])
            progress(f"uploaded {len(state.uploaded)} annotations to project {target}")
    return {"mode": job.upload, "project_id": target, "uploaded": len(to_upload), "total_uploaded": len(state.uploaded)}


def _upload_batch(api, mode: str, state, dataset_id: int, batch: list[Item], anns: list, meta) -> None:
    ids = [item.image_id for item in batch]
    if mode == "create":
        target_dataset = state.datasets.get(str(dataset_id)) or _mirror_dataset(api, state, dataset_id)
        copies = api.image.upload_ids(target_dataset, [item.name for item in batch], ids)
        ids = [info.id for info in copies]
    elif mode == "append":
        existing = api.annotation.download_batch(dataset_id, ids)
        anns = [sly.Annotation.from_json(info.annotation, meta).merge(ann) for info, ann in zip(existing, anns)]
    api.annotation.upload_anns(ids, anns)


def _source_project(api, items: list[Item]) -> int:
    return api.dataset.get_info_by_id(items[0].dataset_id).project_id if items else 0


def _target_project(api, mode: str, source_project: int) -> int:
    if mode != "create":
        return source_project
    info = api.project.get_info_by_id(source_project)
    created = api.project.create(info.workspace_id, f"{info.name}{SUFFIX}", change_name_if_conflict=True)
    return created.id


def _mirror_dataset(api, state, dataset_id: int) -> int:
    """The target dataset of source dataset ``dataset_id`` (its parents first), created once."""
    if str(dataset_id) in state.datasets:
        return state.datasets[str(dataset_id)]
    info = api.dataset.get_info_by_id(dataset_id)
    parent = _mirror_dataset(api, state, info.parent_id) if info.parent_id else None
    created = api.dataset.create(state.project_id, info.name, change_name_if_conflict=True, parent_id=parent)
    state.datasets[str(dataset_id)] = created.id
    state.save()
    return created.id


def merged_meta(target: sly.ProjectMeta, ours: sly.ProjectMeta):
    """``target`` with our classes and tag metas added; a name the target already uses for
    another shape or value type gets :data:`SUFFIX`. Returns (meta, class map, tag map), the
    maps from our names to the target's objects."""
    meta = sly.ProjectMeta
    target, classes = _adopted(target, ours.obj_classes, meta.get_obj_class, meta.add_obj_class, "geometry_type")
    target, tags = _adopted(target, ours.tag_metas, meta.get_tag_meta, meta.add_tag_meta, "value_type")
    return target, classes, tags


def _adopted(target, ours, get, add, kind: str):
    """``target`` with each of ``ours`` (classes or tag metas) found by name, or added (under
    the suffixed name when the target's has another ``kind``); and the map of our names."""
    found = {}
    for item in ours:
        name, existing = item.name, get(target, item.name)
        if existing is not None and getattr(existing, kind) != getattr(item, kind):
            name = item.name + SUFFIX
            existing = get(target, name)
        if existing is None:
            existing = item.clone(name=name)
            target = add(target, existing)
        found[item.name] = existing
    return target, found


def renamed(ann: sly.Annotation, classes: dict, tags: dict) -> sly.Annotation:
    """``ann`` with its classes and tags those of the target meta (see :func:`merged_meta`)."""

    def retagged(collection):
        return [sly.Tag(tags[tag.meta.name], tag.value) for tag in collection]

    labels = []
    for label in ann.labels:
        clone = label.clone(obj_class=classes[label.obj_class.name], tags=sly.TagCollection(retagged(label.tags)))
        clone.status = label.status
        labels.append(clone)
    return ann.clone(labels=labels, img_tags=sly.TagCollection(retagged(ann.img_tags)))


class _State:
    """Where the upload goes (``labelling-upload.json``) and which images it has sent (one key
    per line in ``labelling-uploaded.txt``, appended after every batch)."""

    def __init__(self, path: Path, mode: str):
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if saved and saved.get("mode") != mode:
            raise ValueError(
                f"{path} records an upload with mode '{saved.get('mode')}'; finish it with that mode, or "
                "label into another output folder"
            )
        self.path, self.mode = path, mode
        self.log = path.with_name(UPLOADED_LOG)
        self.project_id: int = saved.get("project_id", 0)
        self.datasets: dict[str, int] = saved.get("datasets", {})
        self.uploaded: set[str] = set()
        if self.log.is_file():
            self.uploaded = {json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line}

    def save(self) -> None:
        body = {"mode": self.mode, "project_id": self.project_id, "datasets": self.datasets}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(body))
        os.replace(temporary, self.path)

    def record(self, keys: list[str]) -> None:
        with open(self.log, "a", encoding="utf-8") as log:
            log.write("".join(json.dumps(key, ensure_ascii=False) + "\n" for key in keys))
            log.flush()
            os.fsync(log.fileno())
        self.uploaded.update(keys)
