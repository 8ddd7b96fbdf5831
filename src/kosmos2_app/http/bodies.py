"""Request bodies: how large, what shape, and which handler reads them.

1. A body over ``max_body_bytes`` is a 413 (by its declared length, or while it is read).
2. The hot inference routes (``POST /inference_image``, ``/inference_batch``: multipart uploads)
   go straight to the app's own ASGI handlers, past the SDK's middleware and router.
3. A JSON body must be an object whose ``state`` and ``context`` are objects (a missing or null
   one becomes ``{}``), and whose ``server_address`` (top level or in ``state``), if any, is the
   configured Supervisely instance: the SDK would otherwise send the request's token to any
   address. A body without a content type is read as JSON. Requests to API routes are marked
   ``outside_request``, so that the SDK does not merge their state into the page's global GUI
   state, and their ``state`` must have the shape of :mod:`.state_schema`. A GET's JSON content
   type (a browser's) means no body, and is dropped.
4. JSON is parsed with bounds (:func:`parse_json`): at most :data:`MAX_JSON_CONTAINERS` arrays
   and objects (counted in C before parsing, so that a body of millions of empty lists costs
   nothing) and :data:`MAX_JSON_DEPTH` levels; a body over :data:`INLINE_PARSE_BYTES` is parsed
   in a worker thread, never on the event loop.
5. Health checks (``/is_ready`` …) never read a body: whatever was sent, the SDK's handler sees
   an empty state.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..config import normalise_server_address
from .access import HEALTH_PATHS
from .errors import BodyTooLarge, send_error
from .state_schema import check_state

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_JSON_CONTAINERS = 100_000
MAX_JSON_DEPTH = 64
INLINE_PARSE_BYTES = 64 << 10
EMPTY_STATE = b'{"state": {}, "context": {}}'


class BodyGate:
    """ASGI middleware; see the module docstring.

    Args:
        app: the ASGI app behind it.
        max_body_bytes: largest request body accepted.
        server_address: the configured Supervisely instance (normalised), or None.
        is_widget_callback: whether a path is a GUI widget callback (the page's own state).
        fast_routes: ``POST`` paths answered by ASGI handlers of the app's own.
    """

    def __init__(
        self,
        app,
        max_body_bytes: int,
        server_address: str | None,
        is_widget_callback: Callable[[str], bool],
        fast_routes: dict[str, Callable] | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.server_address = server_address
        self.is_widget_callback = is_widget_callback
        self.fast_routes = fast_routes or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in HEALTH_PATHS:
            body = EMPTY_STATE if scope["method"] in BODY_METHODS else b""
            await self.app(_with_body_headers(scope, body), _replay(body, receive), send)
            return
        if _declared_length(scope) > self.max_body_bytes:
            await send_error(send, 413, self._too_large())
            return
        handler = self.fast_routes.get(scope["path"])
        if handler is not None and scope["method"] == "POST":
            await handler(scope, self._capped(receive), send)
        elif scope["method"] in BODY_METHODS and not _is_form(scope):
            await self._with_checked_json(scope, receive, send)
        else:
            if scope["method"] not in BODY_METHODS:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]}
            await self._streamed(scope, receive, send)

    async def _streamed(self, scope, receive, send) -> None:
        """The app reads the body itself (forms): past the cap it is a 413, wherever the SDK's
        middlewares let the error out."""
        started = False

        async def noting_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._capped(receive), noting_send)
        except Exception as error:  # the SDK's middleware raises it inside an exception group
            if started or not _is_too_large(error):
                raise
            await send_error(send, 413, self._too_large())

    def _too_large(self) -> str:
        return too_large_message(self.max_body_bytes)

    async def _with_checked_json(self, scope, receive, send) -> None:
        try:
            body = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            await send_error(send, 413, self._too_large())
            return
        try:
            if len(body) > INLINE_PARSE_BYTES:
                body = await anyio.to_thread.run_sync(self.checked_json, scope["path"], body)
            else:
                body = self.checked_json(scope["path"], body)
        except ValueError as error:
            await send_error(send, 400, str(error))
            return
        await self.app(_with_body_headers(scope, body), _replay(body, receive), send)

    def checked_json(self, path: str, body: bytes) -> bytes:
        """The body to pass on, as JSON bytes; ``ValueError`` saying what is wrong."""
        content = parse_json(body, "The request body") if body.strip() else {}
        if not isinstance(content, dict):
            raise ValueError(
                'The request body must be a JSON object such as {"state": {...}}, '
                f"got a JSON {type(content).__name__}."
            )
        for field in ("state", "context"):
            if content.get(field) is None:
                content[field] = {}
            elif not isinstance(content[field], dict):
                raise ValueError(f"'{field}' must be a JSON object, got {type(content[field]).__name__}.")
        for where, holder in (("server_address", content), ("state.server_address", content["state"])):
            self._check_server_address(where, holder.get("server_address"))
        if not (path.startswith("/sly/") or self.is_widget_callback(path)):
            content["context"]["outside_request"] = True  # not the page's own state
            check_state(path, content["state"])
        return json.dumps(content).encode()

    def _check_server_address(self, where: str, address) -> None:
        if address is None:
            return
        if not isinstance(address, str) or normalise_server_address(address) != self.server_address:
            raise ValueError(
                f"'{where}' must be this app's Supervisely instance (SERVER_ADDRESS) or "
                "left out; the server contacts no other instance and sends no token there."
            )

    def _capped(self, receive):
        """``receive`` that raises :class:`BodyTooLarge` once the body passes the cap (a 413:
        :meth:`_streamed` for the SDK's routes, the app's own handlers for the hot ones)."""
        seen = 0

        async def capped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(too_large_message(self.max_body_bytes))
            return message

        return capped


def _is_too_large(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.subgroup(BodyTooLarge) is not None
    return isinstance(error, BodyTooLarge)


def too_large_message(limit: int) -> str:
    return f"The request body is over {limit} bytes (KOSMOS2_MAX_REQUEST_MB on the server)."


def parse_json(data: bytes | str, what: str) -> Any:
    """``data`` parsed as JSON within :data:`MAX_JSON_CONTAINERS` and :data:`MAX_JSON_DEPTH`;
    ``ValueError`` saying what is wrong (``what`` names the part: "The request body",
    "settings"). Costs at most a bounded number of Python objects, whatever ``data`` holds."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    containers = raw.count(b"[") + raw.count(b"{")  # an upper bound: brackets in strings count too
    if containers > MAX_JSON_CONTAINERS:
        raise ValueError(f"{what} holds more than {MAX_JSON_CONTAINERS} JSON arrays and objects.")
    try:
        content = json.loads(raw.decode("utf-8") if isinstance(data, bytes) else data)
    except RecursionError:
        raise ValueError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{what} is not UTF-8 JSON: {error}") from None
    if _depth_exceeds(content, MAX_JSON_DEPTH):
        raise ValueError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.")
    return content


def _depth_exceeds(content: Any, limit: int) -> bool:
    """Whether ``content`` nests arrays and objects more than ``limit`` levels deep (iterative)."""
    stack = [(content, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _with_body_headers(scope, body: bytes) -> dict:
    """``scope`` with the headers of ``body`` (JSON) instead of the client's; none for no body."""
    headers = [
        (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length", b"transfer-encoding")
    ]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {**scope, "headers": headers}


async def read_body(receive, limit: int) -> bytes:
    """The whole body; :class:`BodyTooLarge` once it passes ``limit`` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge
        if not message.get("more_body"):
            break
    return bytes(body)


def _replay(body: bytes, receive) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _is_form(scope) -> bool:
    content_type = dict(scope.get("headers") or ()).get(b"content-type", b"").lower()
    return content_type.startswith((b"multipart/", b"application/x-www-form-urlencoded"))


def _declared_length(scope) -> int:
    value = dict(scope.get("headers") or ()).get(b"content-length", b"")
    return int(value) if value.isdigit() else 0
