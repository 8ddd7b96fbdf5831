"""The server's Prometheus metrics (prometheus_client), served at ``GET /metrics``.

=========================================  =========  =============================================
metric                                     type       what
=========================================  =========  =============================================
``kosmos2_requests_total``                 counter    requests by ``route``, ``task`` and ``status``
``kosmos2_request_duration_seconds``       histogram  request latency by ``route``
``kosmos2_batch_queue_wait_seconds``       histogram  per request, from queueing to its engine run
``kosmos2_batch_images``                   histogram  images per engine run (one vision pass)
``kosmos2_batch_prompts``                  histogram  prompts per engine run
``kosmos2_generated_tokens_total``         counter    tokens generated
``kosmos2_engine_busy_seconds_total``      counter    time the engine spent running
``kosmos2_gpu_memory_allocated_bytes``     gauge      CUDA memory in use, by ``device`` (GPU only)
``kosmos2_decoder_info``                   info       ``mode`` (compiled, eager) and ``fallback``
=========================================  =========  =============================================

``route`` is the path of one of the app's routes, or ``other`` (so that a stranger's paths
cannot grow the label set); ``task`` is the task a request ran, ``""`` where none did. Updating a
metric costs a counter increment or a histogram bucket on the request's way out; the text is
produced only when ``/metrics`` is scraped.

:class:`RequestTimer` (the outermost middleware) counts and times every request; a route that
runs a task says which with :func:`note_task`. :class:`MetricsEndpoint` answers ``GET /metrics``
(behind the access gate: with a key, the key is needed).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from kosmos2_engine import DecoderStatus, RunStats

from .errors import send_body

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """Every metric of one server, in a registry of its own."""

    def __init__(self, decoder_status: Callable[[], DecoderStatus | None] = lambda: None):
        self.registry = CollectorRegistry()
        self.registry.register(DecoderCollector(decoder_status))
        self.routes: frozenset[str] = frozenset()
        self.requests = Counter(
            "kosmos2_requests", "Requests by route, task and status.", ("route", "task", "status"),
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "kosmos2_request_duration_seconds", "Request latency.", ("route",), buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "kosmos2_batch_queue_wait_seconds", "Per request, from queueing to its engine run.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.images = Histogram(
            "kosmos2_batch_images", "Images per engine run.", buckets=SIZE_BUCKETS, registry=self.registry
        )
        self.prompts = Histogram(
            "kosmos2_batch_prompts", "Prompts per engine run.", buckets=SIZE_BUCKETS, registry=self.registry
        )
        self.tokens = Counter("kosmos2_generated_tokens", "Tokens generated.", registry=self.registry)
        self.busy = Counter("kosmos2_engine_busy_seconds", "Time the engine spent running.", registry=self.registry)
        self._gpu_memory()

    def _gpu_memory(self) -> None:
        import torch

        if not torch.cuda.is_available():
            return
        gauge = Gauge("kosmos2_gpu_memory_allocated_bytes", "CUDA memory in use.", ("device",), registry=self.registry)
        for index in range(torch.cuda.device_count()):
            gauge.labels(f"cuda:{index}").set_function(functools.partial(torch.cuda.memory_allocated, index))

    def know_routes(self, paths) -> None:
        """The app's route paths (the values the ``route`` label may take besides ``other``)."""
        self.routes = frozenset(paths)

    def observe_request(self, path: str, task: str, status: int, seconds: float) -> None:
        route = path if path in self.routes else "other"
        self.requests.labels(route, task, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_run(self, stats: RunStats) -> None:
        """The batcher's observer: called on the engine thread after every run."""
        for wait in stats.queue_wait_s:
            self.queue_wait.observe(wait)
        self.images.observe(stats.images)
        self.prompts.observe(stats.prompts)
        self.tokens.inc(stats.tokens)
        self.busy.inc(stats.busy_s)

    def exposition(self) -> tuple[bytes, str]:
        """(the text format, its content type) of every metric."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class DecoderCollector(Collector):
    """``kosmos2_decoder_info{mode, fallback}``: how the deployed engine decodes (``compiled``
    or ``eager``) and, when compiling was asked for but is not used, why (``compile_failed``,
    ``canary_mismatch``); read at each scrape, absent before a deploy."""

    def __init__(self, status: Callable[[], DecoderStatus | None]):
        self.status = status

    def collect(self):
        status = self.status()
        if status is None:
            return
        info = InfoMetricFamily("kosmos2_decoder", "How the engine decodes, and why eager when compiling was asked.")
        info.add_metric([], {"mode": status.mode, "fallback": status.fallback or "none"})
        yield info


@dataclass
class RequestRecord:
    """What the timer learns about one request from the route that served it."""

    task: str = ""


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("kosmos2_request", default=None)


def note_task(task: str) -> None:
    """Record that the current request ran ``task`` (its ``task`` label); no-op outside one."""
    record = _CURRENT.get()
    if record is not None:
        record.task = task


class RequestTimer:
    """ASGI middleware: every HTTP request counted and timed on its way out, with its status
    and the task it ran."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, record = time.perf_counter(), [500], RequestRecord()
        token = _CURRENT.set(record)

        async def send_noting_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            _CURRENT.reset(token)
            self.metrics.observe_request(scope["path"], record.task, status[0], time.perf_counter() - started)


class MetricsEndpoint:
    """ASGI middleware: ``GET /metrics`` (Prometheus text) answered here."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            body, content_type = self.metrics.exposition()
            await send_body(send, 200, body, {"content-type": content_type})
        else:
            await self.app(scope, receive, send)
