"""Cross-request batching on the engine's own thread: concurrent callers share model passes.

Supervisely's labeling tools send one image per request, and the server answers many at once.
Each caller prepares (checks and plans) its own request in its own thread, so bad input fails
only that caller; the prepared requests then queue for the engine thread, which runs them
continuously: when it is idle a request runs at once, and while it is busy arrivals queue and
the next run takes everything queued (up to ``max_images`` images) through
:meth:`Kosmos2Engine.execute`: one vision pass, shared decode batches. No time is spent waiting
for company unless ``max_wait_s`` asks for it. If a joint run fails, each request is run again
alone, so one request's failure is only its own.

The engine thread is the only long-lived thread that runs the model: warm-up and device moves
go through it too (:meth:`RequestBatcher.call`). On CPU, every thread that runs torch keeps its
own OpenMP thread pool, and with two pools on a machine of few cores every parallel region
sleeps and wakes its threads: small ops ran up to 7 times slower. On GPU, compiled graphs are
recorded by the thread that replays them.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .engine import Kosmos2Engine, PreparedRun
from .imaging import ImageInput
from .outputs import TaskResult
from .tasks import GenerationPolicy

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    run: PreparedRun | None  # None for a call
    future: Future = field(default_factory=Future)
    call: Callable[[], Any] | None = None
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def images(self) -> int:
        return self.run.image_count if self.run is not None else 0

    @property
    def prepared(self) -> PreparedRun:
        """The run of a queued request (calls never reach a run)."""
        if self.run is None:
            raise RuntimeError("a call was batched as a run")
        return self.run


@dataclass(frozen=True)
class RunStats:
    """What one engine run did, for whoever observes the batcher (the server's metrics).

    Attributes:
        queue_wait_s: per request, how long it waited between being queued and the run starting.
        images: images encoded in the run (one vision pass).
        prompts: prompts decoded in the run.
        tokens: tokens generated in the run.
        busy_s: how long the run took.
    """

    queue_wait_s: tuple[float, ...]
    images: int
    prompts: int
    tokens: int
    busy_s: float


class RequestBatcher:
    """Runs :meth:`Kosmos2Engine.run` for many callers at once, in shared batches, on one thread.

    Args:
        engine: the engine every request runs on.
        max_wait_s: how long an idle engine waits, after a request arrives, for others to join
            it (0: none; requests still share a run when they queue behind a running one).
        max_images: most images taken into one joint run (the rest wait for the next).
        observer: called on the engine thread with the :class:`RunStats` of every run.
    """

    def __init__(
        self,
        engine: Kosmos2Engine,
        max_wait_s: float = 0.0,
        max_images: int = 64,
        observer: Callable[[RunStats], None] | None = None,
    ):
        if max_wait_s < 0 or max_images < 1:
            raise ValueError(f"need max_wait_s >= 0 and max_images >= 1, got {max_wait_s}, {max_images}")
        self.engine = engine
        self.max_wait_s = max_wait_s
        self.max_images = max_images
        self.observer = observer
        self._queue: list[_Pending] = []
        self._arrived = threading.Condition()
        self._closed = False
        self.joint_runs = 0  # how many engine.execute calls ran more than one request
        self._worker = threading.Thread(target=self._work, name="kosmos2-engine", daemon=True)
        self._worker.start()

    def submit(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> Future:
        """Queue ``engine.run(images, policy)``; the future's result is its
        :class:`TaskResult` list. Raises ``SettingsError`` at once, before queueing."""
        return self._enqueue(_Pending(self.engine.prepare(images, policy)))

    def run(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> list[TaskResult]:
        """Same as ``engine.run(images, policy)``; blocks until done. Raises what that would
        raise (``SettingsError`` before queueing; model errors after)."""
        return self.submit(images, policy).result()

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` on the engine thread, between runs (warm-up, device moves);
        blocks until done and returns its result or raises its error."""
        return self._enqueue(_Pending(None, call=lambda: function(*args))).result()

    def close(self) -> None:
        """Finish what is queued, then stop the engine thread (it releases the engine)."""
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()

    def _enqueue(self, pending: _Pending) -> Future:
        with self._arrived:
            if self._closed:
                raise RuntimeError("This RequestBatcher is closed: its engine was replaced.")
            self._queue.append(pending)
            self._arrived.notify()
        return pending.future

    def _work(self) -> None:
        while batch := self._next_batch():
            if batch[0].call is not None:
                _settle(batch[0].future, batch[0].call)
            else:
                self._execute(batch)

    def _next_batch(self) -> list[_Pending]:
        """A call alone, or the requests queued at its head (up to ``max_images`` images, after
        up to ``max_wait_s`` for more when idle). Empty once closed and drained."""
        with self._arrived:
            while not self._queue and not self._closed:
                self._arrived.wait()
            if not self._queue:
                return []
            if self._queue[0].call is not None:
                return [self._queue.pop(0)]
            deadline = time.monotonic() + self.max_wait_s
            while self._queued_images() < self.max_images and time.monotonic() < deadline:
                self._arrived.wait(timeout=max(0.0, deadline - time.monotonic()))
            taken, images = 0, 0
            for pending in self._queue:
                if pending.call is not None or (taken and images + pending.images > self.max_images):
                    break
                taken, images = taken + 1, images + pending.images
            batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _queued_images(self) -> int:
        return sum(pending.images for pending in self._queue)

    def _execute(self, batch: list[_Pending]) -> None:
        """Run ``batch`` jointly; if that fails, each request alone, each failure its own."""
        started = time.perf_counter()
        tokens_before = self.engine.tokens_generated
        if len(batch) > 1:
            try:
                results = self.engine.execute([pending.prepared for pending in batch])
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
                self._observe(batch, started, tokens_before)
                return
        for pending in batch:
            _settle(pending.future, functools.partial(self._execute_alone, pending.prepared))
        self._observe(batch, started, tokens_before)

    def _execute_alone(self, run: PreparedRun) -> list[TaskResult]:
        return self.engine.execute([run])[0]

    def _observe(self, batch: list[_Pending], started: float, tokens_before: int) -> None:
        if self.observer is None:
            return
        stats = RunStats(
            queue_wait_s=tuple(started - pending.queued_at for pending in batch),
            images=sum(pending.images for pending in batch),
            prompts=sum(len(pending.prepared.jobs) for pending in batch),
            tokens=self.engine.tokens_generated - tokens_before,
            busy_s=time.perf_counter() - started,
        )
        try:
            self.observer(stats)
        except Exception:
            logger.exception("The batcher's observer failed; the run's results stand.")


def _settle(future: Future, work: Callable[[], Any]) -> None:
    try:
        future.set_result(work())
    except Exception as error:  # noqa: BLE001 - handed to the waiting caller
        future.set_exception(error)
