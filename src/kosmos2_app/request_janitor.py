"""Bound what the SDK keeps of finished inference requests.

The SDK's ``InferenceRequestsManager`` keeps every request, synchronous ones included, for an
hour after its last update (about 15 KB each: events, progress, results bookkeeping). A failed
request also keeps its exception, whose traceback holds the frames of the failed call and with
them the decoded image: 3.7 MB for a 1280x960 picture, for an hour. Measured on the real
server before this module: RSS grew 33 KB per request, without bound, under a steady load.

:class:`FinishedRequestJanitor` sweeps the manager at most once a second, from the request
path (no thread of its own):

- a finished request's exception (and those it was raised from) loses its traceback frames (the SDK has already
  formatted the traceback as text for ``/get_inference_progress``);
- a finished request with no results left to pop is removed ``keep_s`` after its last update,
  as ``/clear_inference_request`` would do. Asynchronous clients pop their results and read
  the final status well within that; the SDK's own clients clear their requests themselves.
"""

from __future__ import annotations

import threading
import time

from .sdk_seam import finished_requests


class FinishedRequestJanitor:
    """Sweeps an SDK ``InferenceRequestsManager``; see the module docstring.

    The manager has no public way to list its requests, so :meth:`sweep` lists them through
    :func:`~.sdk_seam.finished_requests` and uses only public methods of each request and
    of the manager.
    """

    def __init__(self, manager, keep_s: float = 60.0, every_s: float = 1.0):
        self.manager = manager
        self.keep_s = keep_s
        self.every_s = every_s
        self._last_sweep = float("-inf")
        self._sweeping = threading.Lock()
        self.failed = False  # a sweep raised (the app logs that once)

    def maybe_sweep(self) -> None:
        """:meth:`sweep`, unless one ran less than ``every_s`` ago or is running now."""
        if time.monotonic() - self._last_sweep < self.every_s or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._last_sweep = time.monotonic()
            self.sweep()
        finally:
            self._sweeping.release()

    def sweep(self) -> int:
        """Drop finished requests' traceback frames; remove the old, fully popped ones.
        Returns how many requests were removed."""
        now, removed = time.monotonic(), 0
        for request in finished_requests(self.manager):
            _drop_frames(request.exception)
            if request.pending_num() == 0 and now - request.updated_at > self.keep_s:
                self.manager.remove(request.uuid)
                removed += 1
        return removed


def _drop_frames(error: BaseException | None) -> None:
    """Clear the traceback of ``error`` and of the exceptions it was raised from."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
