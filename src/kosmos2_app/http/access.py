"""Who may call what: the first middleware behind the request timer.

For each request, in order:

1. **Health checks** (``/is_alive``, ``/livez``, ``/is_ready``, ``/readyz``, ``/is_running``) pass.
2. **Routes nobody needs are gone**: ``/debug`` (starts debugpy) unless ``KOSMOS2_DEBUG_ROUTE=1``;
   the API docs; every file under ``/sly/css`` but the widgets' own ``.css`` / ``.js`` (the SDK
   mounts its whole package there, source code included).
3. **The key**: with ``KOSMOS2_API_KEY`` set, every other route needs it, as an HTTP Basic
   password (any user name: ``http://kosmos:KEY@host:8000`` works with ``Session`` and
   ``ModelAPI``) or ``Authorization: Bearer KEY``; a 401 otherwise. A websocket without it is
   closed.
4. **Control routes** (``/sly/shutdown``, ``/deploy_from_api``, ``/freeze_model`` and the
   GUI's widget callbacks such as Serve and Stop): on the platform (``ENV=production``) they
   come through Supervisely's session proxy; elsewhere, without a key, only from loopback
   callers, and ``/sly/shutdown`` not at all (stop the process instead).
5. ``/sly/session-info`` away from the platform is answered here, without the server's
   ``API_TOKEN``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Callable

from ..config import AccessPolicy
from .errors import send_body, send_error

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
KEY_NEEDED = (
    "This server needs its key (KOSMOS2_API_KEY): send it as the HTTP Basic password "
    "(http://user:KEY@host:port) or as 'Authorization: Bearer KEY'."
)


class AccessGate:
    """ASGI middleware; see the module docstring.

    Args:
        app: the ASGI app behind it.
        policy: key, platform mode, configured Supervisely address, ``/debug``.
        is_widget_callback: whether a path is a GUI widget callback (a control route).
    """

    def __init__(self, app, policy: AccessPolicy, is_widget_callback: Callable[[str], bool]):
        self.app = app
        self.policy = policy
        self.is_widget_callback = is_widget_callback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and self.policy.api_key and not self._has_key(scope):
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await send_error(send, *refusal)
        elif scope["path"] == "/sly/session-info" and not self.policy.production:
            await send_body(send, 200, self._session_info(), {"content-type": "application/json"})
        else:
            await self.app(scope, receive, send)

    def _refusal(self, scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) when the request is refused before its body is read."""
        path = scope["path"]
        if path in HEALTH_PATHS:
            return None
        if path in HIDDEN_PATHS or (path == "/debug" and not self.policy.debug_route):
            return 404, "Not Found", {}
        if path.startswith("/sly/css") and not WIDGET_ASSET.match(path):
            return 404, "Not Found", {}
        if self.policy.api_key:
            if not self._has_key(scope):
                return 401, KEY_NEEDED, {"www-authenticate": 'Basic realm="Kosmos-2"'}
            return None
        if self.policy.production:
            return None
        if path == "/sly/shutdown":
            return self._refuse_control(
                scope,
                "stop the process instead (Ctrl+C, or stop the Supervisely "
                "session), or set KOSMOS2_API_KEY and send it",
            )
        if (path in CONTROL_PATHS or self.is_widget_callback(path)) and not from_loopback(scope):
            return self._refuse_control(
                scope,
                "outside Supervisely, control routes take calls from this "
                "machine only, unless KOSMOS2_API_KEY is set and sent",
            )
        return None

    def _session_info(self) -> bytes:
        """The page's session info without the server's ``API_TOKEN``: away from the platform
        no page needs it, and the SDK handed it to any caller."""
        return json.dumps({"TASK_ID": None, "SERVER_ADDRESS": self.policy.server_address, "API_TOKEN": None}).encode()

    def _refuse_control(self, scope, why: str) -> tuple[int, str, dict[str, str]]:
        logger.warning(
            "Refused %s %s from %s: %s.", scope["method"], scope["path"], (scope.get("client") or ("?",))[0], why
        )
        return 403, f"{scope['path']} is refused: {why}.", {}

    def _has_key(self, scope) -> bool:
        headers = dict(scope.get("headers") or ())
        given = key_from_authorization(headers.get(b"authorization", b"").decode("latin-1"))
        key = self.policy.api_key
        return given is not None and key is not None and hmac.compare_digest(given.encode(), key.encode())


def from_loopback(scope) -> bool:
    """Whether the caller's address is a loopback address (a name is not an address)."""
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def key_from_authorization(value: str) -> str | None:
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
