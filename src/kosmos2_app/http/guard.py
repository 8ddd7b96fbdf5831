"""The app's front door: an ASGI middleware in front of every route, the SDK's included.

In order, for each HTTP request (see the README's Reliability section for the table):

1. **Health checks** (``/is_alive``, ``/livez``, ``/is_ready``, ``/readyz``, ``/is_running``) pass.
2. **Routes nobody needs are gone**: ``/debug`` (starts debugpy) unless ``KOSMOS2_DEBUG_ROUTE=1``;
   the API docs; every file under ``/sly/css`` but the widgets' own ``.css`` / ``.js`` (the SDK
   mounts its whole package there, source code included).
3. **The key**: with ``KOSMOS2_API_KEY`` set, every other route needs it, as an HTTP Basic
   password (any user name: ``http://kosmos:KEY@host:8000`` works with ``Session`` and
   ``ModelAPI``) or ``Authorization: Bearer KEY``; a 401 otherwise.
4. **Control routes** (``/sly/shutdown``, ``/deploy_from_api``, ``/freeze_model`` and the
   GUI's widget callbacks such as Serve and Stop): on the platform (``ENV=production``) they
   come through Supervisely's session proxy; elsewhere, without a key, only from loopback
   callers, and ``/sly/shutdown`` not at all (stop the process instead).
5. ``/sly/session-info`` away from the platform answers without the server's ``API_TOKEN``;
   ``GET /metrics`` is answered here (Prometheus text; with a key, the key is needed).
   The hot inference routes are handed to the app's own handlers here, past every check.
6. **Bodies**: at most ``max_body_bytes`` (413). A JSON body must be an object whose
   ``state`` and ``context`` are objects (a missing or null one becomes ``{}``), and whose
   ``server_address`` (top level or in ``state``), if any, is the configured Supervisely
   instance: the SDK would otherwise send the request's token to any address. A body without
   a content type is read as JSON. Requests to API routes are marked ``outside_request``, so
   that the SDK does not merge their state into the page's global GUI state.

Refusals are JSON in the SDK's error shape ``{"detail", "message", "success": false}``. Every
request is counted and timed (:class:`~.metrics.ServerMetrics`) on its way out.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

from ..config import AccessPolicy, normalise_server_address
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)

HEALTH_PATHS = frozenset({"/is_alive", "/livez", "/is_ready", "/readyz", "/is_running"})
CONTROL_PATHS = frozenset({"/sly/shutdown", "/deploy_from_api", "/freeze_model"})
HIDDEN_PATHS = frozenset(
    {
        "/docs",
        "/redoc",
        "/openapi.json",
        "/docs/oauth2-redirect",
        "/sly/docs",
        "/sly/redoc",
        "/sly/openapi.json",
        "/sly/docs/oauth2-redirect",
    }
)
WIDGET_ASSET = re.compile(r"^/sly/css/app/widgets/[A-Za-z0-9_]+/[A-Za-z0-9_.-]+\.(?:css|js)$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TASK_KEY = "kosmos2_task"  # a handler puts the task it ran in scope["state"] under this key


def _message(status: int, text: str, headers: dict | None = None):
    body = json.dumps({"detail": text, "message": text, "success": False}).encode()
    return status, body, {"content-type": "application/json", **(headers or {})}


class RequestGuard:
    """ASGI middleware; see the module docstring.

    Args:
        app: the ASGI app behind it.
        policy: key, platform mode, configured Supervisely address, ``/debug``.
        is_widget_callback: whether a path is a GUI widget callback (a control route).
        max_body_bytes: largest request body accepted.
        metrics: where every request is counted and timed; also served at ``GET /metrics``.
        fast_routes: ``POST`` paths answered here, past the checks, by ASGI handlers of the
            app's own (the hot inference routes), instead of through the SDK's middleware and
            router.
    """

    def __init__(
        self,
        app,
        policy: AccessPolicy,
        is_widget_callback: Callable[[str], bool],
        max_body_bytes: int,
        metrics: ServerMetrics | None = None,
        fast_routes: dict[str, Callable] | None = None,
    ):
        self.app = app
        self.policy = policy
        self.is_widget_callback = is_widget_callback
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.fast_routes = fast_routes or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and self.policy.api_key and not self._has_key(scope):
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics is None:
            await self._guarded(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_noting_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_noting_status)
        finally:
            task = (scope.get("state") or {}).get(TASK_KEY, "")
            self.metrics.observe_request(scope["path"], task, status[0], time.perf_counter() - started)

    async def _guarded(self, scope, receive, send) -> None:
        refusal = self._refusal(scope)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        if scope["path"] == "/sly/session-info" and not self.policy.production:
            await _respond(send, *self._session_info())
            return
        if scope["path"] == "/metrics" and self.metrics is not None:
            body, content_type = self.metrics.exposition()
            await _respond(send, 200, body, {"content-type": content_type})
            return
        if _declared_length(scope) > self.max_body_bytes:
            await _respond(send, *_message(413, f"The request body is over {self.max_body_bytes} bytes."))
            return
        handler = self.fast_routes.get(scope["path"])
        if handler is not None and scope["method"] == "POST":
            await handler(scope, self._capped(receive), send)
            return
        if scope["method"] in _BODY_METHODS and not _is_form(scope):
            await self._with_checked_json(scope, receive, send)
            return
        if scope["method"] not in _BODY_METHODS:  # a GET's JSON content type (a browser's) means no body
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]}
        await self.app(scope, self._capped(receive), send)

    def _refusal(self, scope):
        """(status, body, headers) when the request is refused before its body is read."""
        path = scope["path"]
        if path in HEALTH_PATHS:
            return None
        if path in HIDDEN_PATHS or (path == "/debug" and not self.policy.debug_route):
            return _message(404, "Not Found")
        if path.startswith("/sly/css") and not WIDGET_ASSET.match(path):
            return _message(404, "Not Found")
        if self.policy.api_key:
            if not self._has_key(scope):
                return _message(
                    401,
                    "This server needs its key (KOSMOS2_API_KEY): send it as the HTTP "
                    "Basic password (http://user:KEY@host:port) or as 'Authorization: "
                    "Bearer KEY'.",
                    {"www-authenticate": 'Basic realm="Kosmos-2"'},
                )
            return None
        if self.policy.production:
            return None
        if path == "/sly/shutdown":
            return self._refuse_control(
                scope,
                "stop the process instead (Ctrl+C, or stop the Supervisely "
                "session), or set KOSMOS2_API_KEY and send it",
            )
        if (path in CONTROL_PATHS or self.is_widget_callback(path)) and not _from_loopback(scope):
            return self._refuse_control(
                scope,
                "outside Supervisely, control routes take calls from this "
                "machine only, unless KOSMOS2_API_KEY is set and sent",
            )
        return None

    def _session_info(self):
        """The page's session info without the server's ``API_TOKEN``: away from the platform
        no page needs it, and the SDK handed it to any caller."""
        body = json.dumps({"TASK_ID": None, "SERVER_ADDRESS": self.policy.server_address, "API_TOKEN": None}).encode()
        return 200, body, {"content-type": "application/json"}

    def _refuse_control(self, scope, why: str):
        logger.warning(
            "Refused %s %s from %s: %s.", scope["method"], scope["path"], (scope.get("client") or ("?",))[0], why
        )
        return _message(403, f"{scope['path']} is refused: {why}.")

    def _has_key(self, scope) -> bool:
        headers = dict(scope.get("headers") or ())
        given = _key_from_authorization(headers.get(b"authorization", b"").decode("latin-1"))
        return given is not None and hmac.compare_digest(given.encode(), self.policy.api_key.encode())

    async def _with_checked_json(self, scope, receive, send) -> None:
        try:
            body = await _read_body(receive, self.max_body_bytes)
        except _TooLarge:
            await _respond(send, *_message(413, f"The request body is over {self.max_body_bytes} bytes."))
            return
        try:
            body = self._checked_json(scope["path"], body)
        except ValueError as error:
            await _respond(send, *_message(400, str(error)))
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.app({**scope, "headers": headers}, _replay(body, receive), send)

    def _checked_json(self, path: str, body: bytes) -> bytes:
        """The body to pass on, as JSON bytes; ``ValueError`` saying what is wrong."""
        if not body.strip():
            content = {}
        else:
            try:
                content = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                raise ValueError(f"The request body is not UTF-8 JSON: {error}") from None
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
        return json.dumps(content).encode()

    def _check_server_address(self, where: str, address) -> None:
        if address is None:
            return
        if not isinstance(address, str) or normalise_server_address(address) != self.policy.server_address:
            raise ValueError(
                f"'{where}' must be this app's Supervisely instance (SERVER_ADDRESS) or "
                "left out; the server contacts no other instance and sends no token there."
            )

    def _capped(self, receive):
        """``receive`` that answers a body over the cap with a disconnect (the app then fails
        the request) after the limit is passed."""
        seen = 0

        async def capped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    return {"type": "http.disconnect"}
            return message

        return capped


class _TooLarge(Exception):
    pass


async def _read_body(receive, limit: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > limit:
            raise _TooLarge
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


async def _respond(send, status: int, body: bytes, headers: dict) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _is_form(scope) -> bool:
    content_type = dict(scope.get("headers") or ()).get(b"content-type", b"").lower()
    return content_type.startswith((b"multipart/", b"application/x-www-form-urlencoded"))


def _declared_length(scope) -> int:
    value = dict(scope.get("headers") or ()).get(b"content-length", b"")
    return int(value) if value.isdigit() else 0


def _from_loopback(scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:  # a test client's "testclient" host is no address
        return client[0] == "testclient"


def _key_from_authorization(value: str) -> str | None:
    """The key in ``Basic base64(user:key)`` or ``Bearer key``; None when absent or malformed."""
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None
