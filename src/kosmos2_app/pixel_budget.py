"""How many pixels the server decodes at once, across all requests.

A decoded image costs about 3 bytes per pixel, and a few more while it is converted and
squashed to the model's input: a 12 kB PNG of 9999 x 9999 is a 300 MB array. Each image is
decoded only after :class:`PixelBudget` grants its pixels (read from its header), squashed to
the model's input at once, and the pixels are given back: the full-size images decoding at any
moment never sum past the budget, whatever the number of requests and images. A request that
cannot get its pixels within ``wait_s`` is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class BudgetExhausted(Exception):
    """The pixels were not granted within the wait; ``retry_after_s`` is a hint for the client."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PixelBudget:
    """A counting semaphore of pixels. Thread-safe.

    Args:
        total: pixels that may be decoding at once (at least the largest image allowed, so
            that any single image can be granted).
        wait_s: how long a request waits for its pixels before :class:`BudgetExhausted`.
    """

    def __init__(self, total: int, wait_s: float = 30.0):
        self.total = total
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def granted(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` (at most :attr:`total`) for the block; waits up to ``wait_s``."""
        pixels = min(max(pixels, 1), self.total)
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while self.in_use + pixels > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    if self.in_use + pixels <= self.total:
                        break
                    raise BudgetExhausted(
                        f"The server is decoding {self.in_use} pixels of other requests' images, "
                        f"its budget (KOSMOS2_DECODE_BUDGET_PIXELS, {self.total}); try again shortly.",
                        retry_after_s=max(1, round(self.wait_s / 10)),
                    )
            self.in_use += pixels
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()
