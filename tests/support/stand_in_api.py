"""A stand-in for a Supervisely instance's public API, served over HTTP on 127.0.0.1 from a
thread of the test process, so that a real server process (which reads ``SERVER_ADDRESS``)
reaches it as it would reach the platform: ``supervisely.Api`` posts to
``<address>/public/api/v3/<method>``.

Team Files of one team: ``files`` maps a path (``/kosmos2/finetuned/config.json``) to bytes;
``file-storage.list`` and ``file-storage.download`` serve them as the platform does (each file's
``hash`` is the base64 SHA-256 of its bytes). Every call is recorded in ``calls`` as
``(method, path)``. A method it does not know is a 404, which the SDK raises.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.support.server_process import free_port


class StandInSupervisely:
    """``with StandInSupervisely() as api:`` serves until the block ends; ``api.url`` is its address."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = FastAPI()
        app.post("/public/api/v3/file-storage.list")(self._list)
        app.post("/public/api/v3/file-storage.download")(self._download)
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
