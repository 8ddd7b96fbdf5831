"""Stand-ins for the parts of ``supervisely.Api`` that the labelling job (:class:`FakeSupervisely`)
and the SDK's project inference (:class:`FakeProject`) use: projects of images held in memory.

Reading tasks run in Ray workers and get a pickled copy (``api_factory`` returns this object),
so downloads work anywhere; uploads happen in the driver, on the original, where tests read
what was created and uploaded.
"""

from __future__ import annotations

import io
import itertools
import logging
from types import SimpleNamespace

import numpy as np
import supervisely as sly
from PIL import Image


class FakeSupervisely:
    """Project ``project_id`` in workspace 5, its datasets ``{id: (name, parent id or None)}``
    and images ``{dataset id: [(image id, name, png bytes), ...]}``; existing annotations
    ``{image id: annotation json}``."""

    def __init__(self, project_id: int, datasets: dict, images: dict, meta: sly.ProjectMeta | None = None):
        self.ids = itertools.count(10_000)
        self.projects = {project_id: {"name": "fields", "meta": (meta or sly.ProjectMeta()).to_json()}}
        self.datasets = {i: {"name": n, "parent": p, "project": project_id} for i, (n, p) in datasets.items()}
        self.images = {i: {"name": n, "bytes": b, "dataset": d} for d, rows in images.items() for i, n, b in rows}
        self.annotations: dict[int, dict] = {}
        self.calls: list[tuple] = []
        self.project = SimpleNamespace(get_info_by_id=self._project_info, create=self._create_project,
                                       get_meta=self._get_meta, update_meta=self._update_meta)  # fmt: skip
        self.dataset = SimpleNamespace(get_info_by_id=self._dataset_info, tree=self._tree, create=self._create_dataset)
        self.image = SimpleNamespace(get_list=self._image_list, download_bytes=self._download, upload_ids=self._copy)
        self.annotation = SimpleNamespace(download_batch=self._download_anns, upload_anns=self._upload_anns)

    def __call__(self):  # the job's api_factory
        return self

    # projects
    def _project_info(self, project_id):
        return SimpleNamespace(id=project_id, name=self.projects[project_id]["name"], workspace_id=5)

    def _create_project(self, workspace_id, name, change_name_if_conflict=False, **_):
        project_id = next(self.ids)
        self.projects[project_id] = {"name": name, "meta": sly.ProjectMeta().to_json()}
        self.calls.append(("project.create", workspace_id, name))
        return SimpleNamespace(id=project_id, name=name)

    def _get_meta(self, project_id):
        return self.projects[project_id]["meta"]

    def _update_meta(self, project_id, meta):
        self.projects[project_id]["meta"] = meta.to_json()
        return meta

    # datasets
    def _dataset_info(self, dataset_id):
        row = self.datasets[dataset_id]
        return SimpleNamespace(id=dataset_id, name=row["name"], parent_id=row["parent"], project_id=row["project"])

    def _tree(self, project_id, dataset_id=None):
        def walk(parent, names):
            for i, row in sorted(self.datasets.items()):
                if row["project"] == project_id and row["parent"] == parent:
                    yield names, self._dataset_info(i)
                    yield from walk(i, [*names, row["name"]])

        if dataset_id is None:
            yield from walk(None, [])
        else:
            yield [], self._dataset_info(dataset_id)
            yield from walk(dataset_id, [self.datasets[dataset_id]["name"]])

    def _create_dataset(self, project_id, name, change_name_if_conflict=False, parent_id=None, **_):
        dataset_id = next(self.ids)
        self.datasets[dataset_id] = {"name": name, "parent": parent_id, "project": project_id}
        return SimpleNamespace(id=dataset_id, name=name)

    # images
    def _image_list(self, dataset_id):
        return [SimpleNamespace(id=i, name=row["name"]) for i, row in sorted(self.images.items())
                if row["dataset"] == dataset_id]  # fmt: skip

    def _download(self, dataset_id, ids):
        assert all(self.images[i]["dataset"] == dataset_id for i in ids), "images of another dataset"
        return [self.images[i]["bytes"] for i in ids]

    def _copy(self, dataset_id, names, ids, **_):
        copies = []
        for name, source in zip(names, ids):
            image_id = next(self.ids)
            self.images[image_id] = {"name": name, "bytes": self.images[source]["bytes"], "dataset": dataset_id}
            copies.append(SimpleNamespace(id=image_id, name=name))
        return copies

    # annotations
    def _download_anns(self, dataset_id, ids):
        return [SimpleNamespace(image_id=i, annotation=self.annotations.get(i) or self._empty(i)) for i in ids]

    def _empty(self, image_id) -> dict:
        """An image's annotation before anyone labelled it: its size, nothing else."""
        with Image.open(io.BytesIO(self.images[image_id]["bytes"])) as image:
            width, height = image.size
        return {"description": "", "size": {"height": height, "width": width}, "tags": [], "objects": []}

    def _upload_anns(self, ids, anns):
        datasets = {self.images[i]["dataset"] for i in ids}
        assert len(datasets) == 1, "the SDK uploads annotations of one dataset per call"
        self.calls.append(("annotation.upload_anns", len(ids)))
        for image_id, ann in zip(ids, anns):
            self.annotations[image_id] = ann.to_json()


class FakeProject:
    """The part of ``supervisely.Api`` that project inference uses, over in-memory images, so
    that the SDK's own ``_inference_project_id`` runs without a Supervisely instance."""

    def __init__(self, images: list[np.ndarray]):
        self.images = dict(enumerate(images, start=100))
        self.logger = logging.getLogger("fake-api")
        self.project = SimpleNamespace(
            get_info_by_id=lambda project_id: SimpleNamespace(id=project_id, type="images", workspace_id=1, name="p")
        )
        dataset = SimpleNamespace(id=10, project_id=1, name="ds", items_count=len(images))
        self.dataset = SimpleNamespace(get_list=lambda project_id, recursive=True: [dataset])
        self.image = SimpleNamespace(
            get_list=lambda dataset_id: [SimpleNamespace(id=i, name=f"{i}.png") for i in self.images],
            download_np=lambda image_id: self.images[image_id],
            download_nps_generator=lambda dataset_id, ids, **_: ((i, self.images[i]) for i in ids),
        )
