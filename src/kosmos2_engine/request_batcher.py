"""Cross-request batching: concurrent callers of :meth:`RequestBatcher.run` share model passes.

Supervisely's labeling tools send one image per request, and the SDK runs requests on a thread
pool. Each caller prepares (checks and plans) its own request in its own thread, so bad input
fails only that caller; the prepared requests then queue for one worker thread. The worker
waits at most ``max_wait_s`` after the first arrival for company, then runs everything queued
(up to ``max_images`` images) through :meth:`Kosmos2Engine.execute`: one vision pass, shared
decode batches. If that joint run fails, each request is run again alone, so one request's
failure is only its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from .engine import ImageInput, Kosmos2Engine, PreparedRun
from .planning import TaskResult
from .policy import GenerationPolicy

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    run: PreparedRun
    future: Future = field(default_factory=Future)


class RequestBatcher:
    """Runs :meth:`Kosmos2Engine.run` for many threads at once, in shared batches.

    Args:
        engine: the engine every request runs on.
        max_wait_s: how long the worker waits, after a request arrives to an idle queue, for
            others to join it. Adds at most this much latency to a lone request.
        max_images: most images taken into one joint run (the rest wait for the next).
    """

    def __init__(self, engine: Kosmos2Engine, max_wait_s: float = 0.01, max_images: int = 64):
        if max_wait_s < 0 or max_images < 1:
            raise ValueError(f"need max_wait_s >= 0 and max_images >= 1, got {max_wait_s}, {max_images}")
        self.engine = engine
        self.max_wait_s = max_wait_s
        self.max_images = max_images
        self._queue: list[_Pending] = []
        self._arrived = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.joint_runs = 0  # how many engine.execute calls ran more than one request

    def run(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> list[TaskResult]:
        """Same as ``engine.run(images, policy)``; blocks until done. Raises what that would
        raise (``SettingsError`` before queueing; model errors after)."""
        pending = _Pending(self.engine.prepare(images, policy))
        with self._arrived:
            if self._closed:
                raise RuntimeError("This RequestBatcher is closed: its engine was replaced.")
            self._start_worker()
            self._queue.append(pending)
            self._arrived.notify()
        return pending.future.result()

    def close(self) -> None:
        """Finish what is queued, then stop the worker (it releases the engine)."""
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()

    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="kosmos2-batcher", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while batch := self._next_batch():
            self._execute(batch)

    def _next_batch(self) -> list[_Pending]:
        """Wait for a request, then up to ``max_wait_s`` for more; take up to ``max_images``.
        Empty once closed and drained."""
        with self._arrived:
            while not self._queue and not self._closed:
                self._arrived.wait()
            deadline = time.monotonic() + self.max_wait_s
            while self._queued_images() < self.max_images and time.monotonic() < deadline:
                self._arrived.wait(timeout=max(0.0, deadline - time.monotonic()))
            taken, images = 0, 0
            for pending in self._queue:
                if taken and images + len(pending.run.images) > self.max_images:
                    break
                taken, images = taken + 1, images + len(pending.run.images)
            batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _queued_images(self) -> int:
        return sum(len(pending.run.images) for pending in self._queue)

    def _execute(self, batch: list[_Pending]) -> None:
        """Run ``batch`` jointly; if that fails, each request alone, each failure its own."""
        if len(batch) > 1:
            try:
                results = self.engine.execute([pending.run for pending in batch])
            except Exception as error:  # noqa: BLE001 - isolate: retry each request alone
                logger.warning(
                    "A joint run of %d requests failed (%s: %s); running them one by one.",
                    len(batch),
                    type(error).__name__,
                    error,
                )
            else:
                self.joint_runs += 1
                for pending, result in zip(batch, results):
                    pending.future.set_result(result)
                return
        for pending in batch:
            try:
                pending.future.set_result(self.engine.execute([pending.run])[0])
            except Exception as error:  # noqa: BLE001 - handed to the waiting caller
                pending.future.set_exception(error)
