"""A stand-in for a Supervisely instance's public API, served over HTTP on 127.0.0.1 from a
thread of the test process, so that a real server process (which reads ``SERVER_ADDRESS``)
reaches it as it would reach the platform: ``supervisely.Api`` posts to
``<address>/public/api/v3/<method>``.

Team Files of one team: ``files`` maps a path (``/kosmos2/finetuned/config.json``) to bytes;
``file-storage.list`` and ``file-storage.download`` serve them as the platform does (each file's
``hash`` is the base64 SHA-256 of its bytes). Image projects (:meth:`add_project`): the reads
the SDK's project inference makes (``projects.info``, ``projects.meta``, ``datasets.list``,
``images.list``, ``images.download``, ``images.bulk.download``). A serving session
(:meth:`serve_session`): listed as a running task of a serving app, and reached as the platform
reaches one, through ``tasks.request.direct`` and the session proxy ``/net/<token>/<route>``,
both forwarded to the real server. Every call is recorded in ``calls`` as ``(method, what)``. A
method it does not know is a 404, which the SDK raises.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from pathlib import Path

import anyio
import requests
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
        self.videos: dict[int, dict] = {}  # id -> {"name", "bytes", "dataset", "frames", "width", "height"}
        self.calls: list[tuple[str, str]] = []
        self.sessions: dict[int, str] = {}  # task id -> the served app's URL
        self.annotations: dict[int, dict] = {}  # image id -> its annotation JSON, as uploaded
        self.forwarded: list[tuple[str, bytes]] = []  # (route, body) of what the session proxy passed on
        self._ids = iter(range(5000, 10**6))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = FastAPI()
        app.post("/public/api/v3/file-storage.list")(self._list)
        app.post("/public/api/v3/file-storage.download")(self._download)
        app.post("/public/api/v3/projects.info")(self._by_id("projects.info", self.projects, self._project_json))
        app.post("/public/api/v3/projects.meta")(self._project_meta)
        app.post("/public/api/v3/datasets.list")(
            self._listing("datasets.list", "projectId", self.datasets, "project", self._dataset_info)
        )
        app.post("/public/api/v3/images.list")(
            self._listing("images.list", "datasetId", self.images, "dataset", self._image_info)
        )
        app.post("/public/api/v3/images.download")(self._image)
        app.post("/public/api/v3/images.bulk.download")(self._image_batch)
        app.post("/public/api/v3/images.info")(self._by_id("images.info", self.images, self._image_info))
        app.post("/public/api/v3/videos.info")(self._by_id("videos.info", self.videos, self._video_info))
        app.post("/public/api/v3/videos.download")(self._video)
        app.post("/public/api/v3/datasets.info")(self._by_id("datasets.info", self.datasets, self._dataset_info))
        app.post("/public/api/v3/projects.add")(self._add_project)
        app.post("/public/api/v3/projects.meta.update")(self._update_meta)
        app.post("/public/api/v3/projects.settings.update")(self._accepted("projects.settings.update"))
        app.post("/public/api/v3/datasets.add")(self._add_dataset)
        app.post("/public/api/v3/images.bulk.add")(self._add_images)
        app.post("/public/api/v3/annotations.bulk.add")(self._add_annotations)
        app.post("/public/api/v3/annotations.bulk.copy")(self._copy_annotations)
        app.post("/public/api/v3/annotations.bulk.info")(self._annotations_of)
        app.post("/public/api/v3/teams.list")(self._teams)
        app.post("/public/api/v3/workspaces.list")(self._workspaces)
        app.post("/public/api/v3/projects.list")(self._projects)
        app.get("/public/api/v3/ecosystem.models.list")(self._nothing("ecosystem.models.list"))
        app.post("/public/api/v3/entities-collections.list")(self._nothing("entities-collections.list"))
        app.post("/public/api/v3/ecosystem.list")(self._modules)
        app.post("/public/api/v3/tasks.list")(self._tasks)
        app.post("/public/api/v3/tasks.info")(self._by_id("tasks.info", self.sessions, self._task_json))
        app.post("/public/api/v3/tasks.request.direct")(self._task_request)
        app.api_route("/net/{token}/{route:path}", methods=["GET", "POST"])(self._session_proxy)
        app.post("/public/api/v3/instance.version")(self._version)
        app.post("/public/api/v3/{method}")(self._unknown)
        app.get("/public/api/v3/{method}")(self._unknown)
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

    def add_video(self, video_id: int, name: str, data: bytes, frames: int, width: int, height: int) -> None:
        """Video ``video_id`` (encoded ``data``, its frame count and size as its info says) in
        dataset 30 of video project 12."""
        self.videos[video_id] = {"name": name, "bytes": data, "dataset": 30, "frames": frames,
                                 "width": width, "height": height}  # fmt: skip

    def serve_session(self, task_id: int, url: str) -> None:
        """Serving task ``task_id`` of the app ``Serve Kosmos-2``, running at ``url``."""
        self.sessions[task_id] = url

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

    def _project_json(self, project_id: int) -> dict:
        project = self.projects[project_id]
        images = [i for i in self.images.values() if self.datasets[i["dataset"]]["project"] == project_id]
        return {
            "id": project_id, "name": project["name"], "description": "", "size": "0", "readme": "",
            "workspaceId": 5, "teamId": 1, "type": "images", "itemsCount": len(images),
            "datasetsCount": sum(d["project"] == project_id for d in self.datasets.values()),
            "createdAt": _NOW, "updatedAt": _NOW,
        }  # fmt: skip

    async def _project_meta(self, request: Request) -> JSONResponse:
        project_id = (await request.json())["id"]
        self.calls.append(("projects.meta", str(project_id)))
        return JSONResponse(self.projects[project_id]["meta"])

    async def _add_project(self, request: Request) -> JSONResponse:
        body = await request.json()
        project_id = next(self._ids)
        self.calls.append(("projects.add", body["name"]))
        self.projects[project_id] = {"name": body["name"], "meta": {"classes": [], "tags": []}}
        return JSONResponse(self._project_json(project_id))

    async def _update_meta(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(("projects.meta.update", str(body["id"])))
        self.projects[body["id"]]["meta"] = body["meta"]
        return JSONResponse({"success": True})

    async def _add_dataset(self, request: Request) -> JSONResponse:
        body = await request.json()
        dataset_id = next(self._ids)
        self.calls.append(("datasets.add", body["name"]))
        self.datasets[dataset_id] = {"name": body["name"], "project": body["projectId"]}
        return JSONResponse(self._dataset_info(dataset_id))

    async def _add_images(self, request: Request) -> JSONResponse:
        """Images added to a dataset as copies of existing ones (``imageId``), as ``upload_ids`` sends them."""
        body = await request.json()
        self.calls.append(("images.bulk.add", str(body["datasetId"])))
        added = []
        for image in body["images"]:
            image_id = next(self._ids)
            self.images[image_id] = {
                **self.images[image["imageId"]],
                "name": image["title"],
                "dataset": body["datasetId"],
            }
            added.append(self._image_info(image_id))
        return JSONResponse(added)

    async def _annotations_of(self, request: Request) -> JSONResponse:
        """Each image's annotation: as uploaded, else empty (its size, nothing else)."""
        body = await request.json()
        self.calls.append(("annotations.bulk.info", str(body["datasetId"])))
        found = []
        for image_id in body["imageIds"]:
            image = self.images[image_id]
            empty = {"description": "", "size": {"height": image["height"], "width": image["width"]}, "tags": [],
                     "objects": []}  # fmt: skip
            annotation = self.annotations.get(image_id, empty)
            found.append({"imageId": image_id, "imageName": image["name"], "datasetId": image["dataset"],
                          "annotation": annotation, "createdAt": _NOW, "updatedAt": _NOW})  # fmt: skip
        return JSONResponse(found)

    async def _copy_annotations(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(("annotations.bulk.copy", ""))
        for source, target in zip(body["srcImageIds"], body["destImageIds"]):
            if source in self.annotations:
                self.annotations[target] = self.annotations[source]
        return JSONResponse({"success": True})

    async def _add_annotations(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(("annotations.bulk.add", str(body["datasetId"])))
        for item in body["annotations"]:
            self.annotations[item["imageId"]] = item["annotation"]
        return JSONResponse([{"success": True}] * len(body["annotations"]))

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

    def _video_info(self, video_id: int) -> dict:
        video = self.videos[video_id]
        return {
            "id": video_id, "name": video["name"], "hash": "", "link": None, "teamId": 1, "workspaceId": 5,
            "projectId": 12, "datasetId": video["dataset"], "pathOriginal": "", "processingPath": "",
            "fileMeta": {"framesCount": video["frames"], "width": video["width"], "height": video["height"],
                         "size": len(video["bytes"]), "duration": video["frames"] / 10, "framesToTimecodes": []},
            "meta": {}, "customData": {}, "tags": [], "createdAt": _NOW, "updatedAt": _NOW,
        }  # fmt: skip

    async def _video(self, request: Request) -> Response:
        video_id = (await request.json())["id"]
        self.calls.append(("videos.download", str(video_id)))
        if video_id not in self.videos:
            return JSONResponse({"error": f"videos.download: no id {video_id}"}, status_code=404)
        return Response(self.videos[video_id]["bytes"], media_type="video/mp4")

    async def _teams(self, request: Request) -> JSONResponse:
        self.calls.append(("teams.list", ""))
        return _page(
            [{"id": 1, "name": "team", "description": "", "role": "admin", "createdAt": _NOW, "updatedAt": _NOW}]
        )

    async def _workspaces(self, request: Request) -> JSONResponse:
        self.calls.append(("workspaces.list", ""))
        return _page([{"id": 5, "name": "workspace", "description": "", "teamId": 1, "createdAt": _NOW,
                       "updatedAt": _NOW}])  # fmt: skip

    async def _projects(self, request: Request) -> JSONResponse:
        self.calls.append(("projects.list", ""))
        found = [self._project_json(i) for i in self.projects]
        return _page(_filtered(found, (await request.json()).get("filter")))

    async def _modules(self, request: Request) -> JSONResponse:
        self.calls.append(("ecosystem.list", ""))
        module = {
            "id": SERVING_MODULE, "slug": "supervisely-ecosystem/serve-kosmos-2", "name": "Serve Kosmos-2",
            "type": "app", "config": {"categories": ["images", "serve", "framework:Kosmos-2"]},
            "createdAt": _NOW, "updatedAt": _NOW,
        }  # fmt: skip
        return _page([module] if self.sessions else [])

    async def _tasks(self, request: Request) -> JSONResponse:
        self.calls.append(("tasks.list", ""))
        return _page([self._task_json(task_id) for task_id in self.sessions])

    def _task_json(self, task_id: int) -> dict:
        app = {"id": 1, "moduleId": SERVING_MODULE, "name": "Serve Kosmos-2"}
        return {"id": task_id, "status": "started", "workspaceId": 5, "createdBy": 1, "moduleId": SERVING_MODULE,
                "meta": {"app": app, "sessionToken": f"session-{task_id}"}, "createdAt": _NOW}  # fmt: skip

    def _task_request(self, body: dict) -> Response:
        """``api.task.send_request``: the command posted to the task's app with its state."""
        self.calls.append(("tasks.request.direct", body["command"]))
        url = f"{self.sessions[body['taskId']]}/{body['command']}"
        answer = requests.post(url, json={"state": body.get("state") or {}, "context": body.get("context") or {}},
                               timeout=120)  # fmt: skip
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    async def _session_proxy(self, token: str, route: str, request: Request) -> Response:
        """The platform's session proxy: ``/net/session-<task id>/<route>`` to the app's route."""
        task_id = int(token.removeprefix("session-"))
        self.calls.append(("net", route))
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        body = await request.body()
        self.forwarded.append((route, body))

        def forward() -> requests.Response:
            return requests.request(request.method, f"{self.sessions[task_id]}/{route}", data=body,
                                    params=dict(request.query_params), headers=headers, timeout=120)  # fmt: skip

        answer = await anyio.to_thread.run_sync(forward)
        return Response(answer.content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type"))  # fmt: skip

    def _listing(self, method: str, parent_field: str, table: dict, parent_key: str, to_json):
        """A ``*.list`` method: the JSON of ``table``'s entries whose ``parent_key`` is the body's
        ``parent_field`` (a project's datasets, a dataset's images), filtered, one page."""

        async def answer(request: Request) -> JSONResponse:
            body = await request.json()
            parent = body.get(parent_field)
            self.calls.append((method, str(parent)))
            found = [to_json(i) for i, entry in table.items() if entry[parent_key] == parent]
            return _page(_filtered(found, body.get("filter")))

        return answer

    def _by_id(self, method: str, table: dict, to_json):
        """An ``*.info`` method: the JSON of ``table``'s entry ``id``, or a 404."""

        async def answer(request: Request) -> JSONResponse:
            item_id = (await request.json())["id"]
            self.calls.append((method, str(item_id)))
            if item_id not in table:
                return JSONResponse({"error": f"{method}: no id {item_id}"}, status_code=404)
            return JSONResponse(to_json(item_id))

        return answer

    def _accepted(self, method: str):
        """A method whose effect nothing here reads (a project's settings): recorded, then success."""

        async def answer() -> JSONResponse:
            self.calls.append((method, ""))
            return JSONResponse({"success": True})

        return answer

    def _nothing(self, method: str):
        """A list method that has nothing here (the ecosystem's apps and models)."""

        async def answer() -> JSONResponse:
            self.calls.append((method, ""))
            return _page([])

        return answer

    async def _version(self) -> JSONResponse:
        self.calls.append(("instance.version", ""))
        return JSONResponse({"version": "6.14.0"})

    async def _unknown(self, method: str, request: Request) -> JSONResponse:
        self.calls.append(("unknown", method))
        return JSONResponse({"error": f"the stand-in API has no method {method}"}, status_code=404)


_NOW = "2026-12-03T00:00:00.000Z"
SERVING_MODULE = 501  # the ecosystem module id of Serve Kosmos-2 here


def _filtered(entities: list[dict], filters: list | None) -> list[dict]:
    """``entities`` that pass every ``{"field", "operator": "=" | "in", "value"}`` filter."""
    for condition in filters or []:
        field, operator, value = condition["field"], condition["operator"], condition["value"]
        allowed = value if operator == "in" else [value]
        entities = [entity for entity in entities if entity.get(field) in allowed]
    return entities


def _page(entities: list) -> JSONResponse:
    """A list method's answer: one page holding every entity."""
    return JSONResponse(
        {"total": len(entities), "perPage": max(1, len(entities)), "pagesCount": 1, "entities": entities}
    )
