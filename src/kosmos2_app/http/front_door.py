"""The app's front door: the middlewares in front of every route, the SDK's included, in order.

=====================  ==================================================================
middleware             what it does
=====================  ==================================================================
:class:`RequestTimer`  counts and times every request on its way out (:mod:`.metrics`)
:class:`AccessGate`    health checks pass; hidden routes 404; the key (401); control
                       routes (403); ``/sly/session-info`` without the token
                       (:mod:`.access`)
:class:`MetricsEndpoint`  ``GET /metrics``
:class:`BodyGate`      body size (413); the hot upload routes to the app's own handlers;
                       JSON bodies checked and normalised (:mod:`.bodies`)
=====================  ==================================================================

Every refusal is JSON in the SDK's error shape (:mod:`.errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import AccessPolicy
from .access import AccessGate
from .bodies import BodyGate
from .metrics import MetricsEndpoint, RequestTimer, ServerMetrics


class FrontDoor:
    """ASGI middleware: the chain of the module docstring in front of ``app``.

    Args:
        app: the ASGI app behind it.
        policy: key, platform mode, configured Supervisely address, ``/debug``.
        is_widget_callback: whether a path is a GUI widget callback (a control route).
        max_body_bytes: largest request body accepted.
        metrics: where every request is counted and timed, served at ``GET /metrics``; none
            when None.
        fast_routes: ``POST`` paths answered by ASGI handlers of the app's own.
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
        inner: Any = BodyGate(app, max_body_bytes, policy.server_address, is_widget_callback, fast_routes)
        if metrics is not None:
            inner = MetricsEndpoint(inner, metrics)
        inner = AccessGate(inner, policy, is_widget_callback)
        self.app = RequestTimer(inner, metrics) if metrics is not None else inner

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)
