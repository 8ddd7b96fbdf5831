"""A stand-in for a Supervisely instance's public API, served over HTTP on 127.0.0.1 from a
thread of the test process, so that a real server process (which reads ``SERVER_ADDRESS``)
reaches it as it would reach the platform: ``supervisely.Api`` posts to
``<address>/public/api/v3/<method>``.

Team Files of one team: ``files`` maps a path (``/kosmos2/finetuned/config.json``) to bytes;
``file-storage.list`` and ``file-storage.download`` serve them as the platform does (each file's
``hash`` is the base64 SHA-256 of its bytes). Image projects (:meth:`add_project`): the reads
the SDK's project inference makes (``projects.info``, ``projects.meta``, ``datasets.list``,
``images.list``, ``images.download``, ``images.bulk.download``). Every call is recorded in
``calls`` as ``(method, what)``. A method it does not know is a 404, which the SDK raises.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from tests.support.server_process import free_port


class StandInSupervisely:
    """``with StandInSupervisely() as api:`` serves until the block ends; ``api.url`` is its address."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.projects: dict[int, dict] = {}  # id -> {"name", "meta"}
        self.datasets: dict[int, dict] = {}  # id -> {"name", "project"}
        self.images: dict[int, dict] = {}  # id -> {"name", "bytes", "dataset", "width", "height"}
        self.calls: list[tuple[str, str]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = FastAPI()
        app.post("/public/api/v3/file-storage.list")(self._list)
        app.post("/public/api/v3/file-storage.download")(self._download)
        app.post("/public/api/v3/projects.info")(self._project_info)
        app.post("/public/api/v3/projects.meta")(self._project_meta)
        app.post("/public/api/v3/datasets.list")(self._datasets)
        app.post("/public/api/v3/images.list")(self._images)
        app.post("/public/api/v3/images.download")(self._image)
        app.post("/public/api/v3/images.bulk.download")(self._image_batch)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def put_folder(self, remote: str, local: Path, changes: dict[str, bytes | None] | None = None) -> None:
        """Team Files folder ``remote`` (``/a/b/``) holding the files of ``local``, with
        ``changes`` applied (a name's new bytes, or None to leave it out)."""
        for path in sorted(local.iterdir()):
            if path.is_file():
                self.files[remote + path.name] = path.read_bytes()
        for name, data in (changes or {}).items():
            self.files.pop(remote + name, None)
            if data is not None:
                self.files[remote + name] = data

    def add_project(self, project_id: int, name: str, datasets: dict[int, tuple[str, list]], meta: dict | None = None):
        """Image project ``project_id`` in workspace 5: ``datasets`` maps a dataset id to its name
        and its images ``[(image id, name, PNG bytes)]``; ``meta`` is its ProjectMeta JSON."""
        self.projects[project_id] = {"name": name, "meta": meta or {"classes": [], "tags": []}}
        for dataset_id, (dataset_name, images) in datasets.items():
            self.datasets[dataset_id] = {"name": dataset_name, "project": project_id}
            for image_id, image_name, data in images:
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
                self.images[image_id] = {"name": image_name, "bytes": data, "dataset": dataset_id,
                                         "width": width, "height": height}  # fmt: skip

    def __enter__(self) -> StandInSupervisely:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the stand-in API did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _list(self, request: Request) -> JSONResponse:
        body = await request.json()
        folder = body["path"]
        self.calls.append(("file-storage.list", folder))
        found = [self._info(i, path) for i, path in enumerate(sorted(self.files)) if path.startswith(folder)]
        return JSONResponse(found)

    async def _download(self, request: Request) -> Response:
        body = await request.json()
        path = body["path"]
        self.calls.append(("file-storage.download", path))
        if path not in self.files:
            return JSONResponse({"error": "file not found"}, status_code=404)
        return Response(self.files[path], media_type="application/octet-stream")

    def _info(self, file_id: int, path: str) -> dict:
        data = self.files[path]
        name = path.rsplit("/", 1)[1]
        return {
            "teamId": 1, "id": 1000 + file_id, "userId": 1, "name": name, "path": path,
            "hash": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "storagePath": f"/storage{path}", "fullStorageUrl": f"{self.url}/storage{path}", "isDir": False,
            "meta": {"size": len(data), "ext": name.rsplit(".", 1)[-1], "mime": "application/octet-stream"},
            "createdAt": "2026-12-03T00:00:00.000Z", "updatedAt": "2026-12-03T00:00:00.000Z",
        }  # fmt: skip

    async def _project_info(self, request: Request) -> JSONResponse:
        project_id = (await request.json())["id"]
        self.calls.append(("projects.info", str(project_id)))
        if project_id not in self.projects:
            return JSONResponse({"error": "project not found"}, status_code=404)
        project = self.projects[project_id]
        images = [i for i in self.images.values() if self.datasets[i["dataset"]]["project"] == project_id]
        return JSONResponse({
            "id": project_id, "name": project["name"], "description": "", "size": "0", "readme": "",
            "workspaceId": 5, "teamId": 1, "type": "images", "itemsCount": len(images),
            "datasetsCount": sum(d["project"] == project_id for d in self.datasets.values()),
            "createdAt": "2026-12-03T00:00:00.000Z", "updatedAt": "2026-12-03T00:00:00.000Z",
        })  # fmt: skip

    async def _project_meta(self, request: Request) -> JSONResponse:
        project_id = (await request.json())["id"]
        self.calls.append(("projects.meta", str(project_id)))
        return JSONResponse(self.projects[project_id]["meta"])

    async def _datasets(self, request: Request) -> JSONResponse:
        body = await request.json()
        project_id = body.get("projectId")
        self.calls.append(("datasets.list", str(project_id)))
        found = [self._dataset_info(i) for i, d in self.datasets.items() if d["project"] == project_id]
        return JSONResponse({"total": len(found), "perPage": max(1, len(found)), "pagesCount": 1, "entities": found})

    async def _images(self, request: Request) -> JSONResponse:
        dataset_id = (await request.json()).get("datasetId")
        self.calls.append(("images.list", str(dataset_id)))
        found = [self._image_info(i) for i, image in self.images.items() if image["dataset"] == dataset_id]
        return JSONResponse({"total": len(found), "perPage": max(1, len(found)), "pagesCount": 1, "entities": found})

    async def _image(self, request: Request) -> Response:
        image_id = (await request.json())["id"]
        self.calls.append(("images.download", str(image_id)))
        return Response(self.images[image_id]["bytes"], media_type="image/png")

    async def _image_batch(self, request: Request) -> Response:
        ids = (await request.json())["imageIds"]
        self.calls.append(("images.bulk.download", ",".join(map(str, ids))))
        boundary = "standinboundary"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{i}"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + self.images[i]["bytes"]
            + b"\r\n"
            for i in ids
        ]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return Response(body, media_type=f"multipart/form-data; boundary={boundary}")

    def _dataset_info(self, dataset_id: int) -> dict:
        dataset = self.datasets[dataset_id]
        count = sum(image["dataset"] == dataset_id for image in self.images.values())
        return {
            "id": dataset_id, "name": dataset["name"], "description": "", "size": "0", "projectId": dataset["project"],
            "imagesCount": count, "itemsCount": count, "teamId": 1, "workspaceId": 5, "parentId": None,
            "createdAt": "2026-12-03T00:00:00.000Z", "updatedAt": "2026-12-03T00:00:00.000Z",
        }  # fmt: skip

    def _image_info(self, image_id: int) -> dict:
        image = self.images[image_id]
        return {
            "id": image_id, "name": image["name"], "link": None,
            "hash": base64.b64encode(hashlib.sha256(image["bytes"]).digest()).decode(),
            "mime": "image/png", "ext": "png", "size": len(image["bytes"]), "width": image["width"],
            "height": image["height"], "labelsCount": 0, "datasetId": image["dataset"],
            "projectId": self.datasets[image["dataset"]]["project"], "meta": {}, "tags": [],
            "createdAt": "2026-12-03T00:00:00.000Z", "updatedAt": "2026-12-03T00:00:00.000Z",
        }  # fmt: skip
