"""``POST /smart_cache``: the SDK's image cache warmed in the background, ending with the server.

The SDK ran the caching as a request background task, with a Supervisely API that retries a
failed call ten times: with an instance that does not answer, uvicorn waited for it on SIGTERM,
and the server did not stop until a second signal. Here the same caching
(``model.cache.cache_task``) runs in a daemon thread, which never holds the process, with an API
that retries twice; the answer is the SDK's.
"""

from __future__ import annotations

import logging
import threading

import supervisely as sly
from fastapi import Request
from fastapi.responses import JSONResponse

from .. import sdk_seam as sdk

logger = logging.getLogger(__name__)
RETRIES = 2


class SmartCacheRoute:
    """``/smart_cache`` for ``model``; :meth:`register` puts it in place."""

    def __init__(self, model, server_address: str | None):
        self.model = model
        self.server_address = server_address

    def register(self, server) -> None:
        sdk.replace_route(server, "/smart_cache", self.smart_cache)

    async def smart_cache(self, request: Request) -> JSONResponse:
        state = dict(request.state.state)
        api = self._api(request, state.pop("api_token", None))
        state.pop("server_address", None)  # the front door allowed only the configured one
        threading.Thread(target=self._cache, args=(api, state), name="kosmos2-smart-cache", daemon=True).start()
        return JSONResponse({"message": "Cache task started."})

    def _api(self, request: Request, token) -> sly.Api | None:
        api = self.model.api_from_request(request)  # retries twice (Kosmos2.api_from_request)
        if api is None and isinstance(token, str) and token and self.server_address:
            api = sly.Api(self.server_address, token, retry_count=RETRIES, ignore_task_id=True)
        return api

    def _cache(self, api: sly.Api | None, state: dict) -> None:
        if api is None:
            logger.warning("/smart_cache: no Supervisely API token came with the request; nothing cached.")
            return
        try:
            self.model.cache.cache_task(api=api, state=state)
        except Exception as error:  # noqa: BLE001 - a background cache failure is logged, once
            logger.warning("/smart_cache: caching failed (%s: %s).", type(error).__name__, error)
