"""Ctrl-C that is never lost while a labelling job runs.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives.
When that is a finaliser (``__del__``, whose exceptions Python ignores) or library code that
catches ``BaseException`` and carries on, the interrupt vanishes and the job runs to its end.
:class:`InterruptWatch` also remembers the signal, and the job's loop calls :meth:`check` after
each batch, which raises it again.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Literal


class InterruptWatch:
    """``with InterruptWatch() as watch:`` on the main thread: SIGINT raises ``KeyboardInterrupt``
    as Python's own handler does, and is remembered; :meth:`check` raises it again. Nothing is
    installed off the main thread, or when SIGINT already has another handler (ignored under
    ``nohup``, or an embedding program's), and the previous handler is restored on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None  # the handler this watch replaced, while it is installed

    def __enter__(self) -> InterruptWatch:
        on_main_thread = threading.current_thread() is threading.main_thread()
        if on_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` when SIGINT arrived inside this watch."""
        if self.requested:
            raise KeyboardInterrupt
