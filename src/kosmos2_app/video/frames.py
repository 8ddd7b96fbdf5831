"""A video's frames, read and decoded in a thread of their own, a batch or two ahead.

:class:`FrameReader` reads the frames of each batch of frame indices (ascending or descending),
seeking only when the next frame wanted is behind the position or far ahead of it, and puts
them on a bounded queue: decoding the next batch overlaps the model's run on this one, and at
most ``ahead`` batches wait in memory. Frames are RGB uint8 (H, W, 3); what the model gets is
squashed to its input side at once (as uploaded images are), the whole frame kept only where
the tracker needs it (re-identification crops whole frames).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from kosmos2_engine import ImageInput, shrink

SEEK_GAP = 48  # frames: read through a gap up to this long instead of seeking


@dataclass
class FrameBatch:
    """Frames ``indices`` (in the request's order): ``views`` for the model, ``whole`` RGB frames
    (empty unless asked for)."""

    indices: list[int]
    views: list[ImageInput]
    whole: list[np.ndarray]


class FrameReader:
    """Iterates :class:`FrameBatch` es of ``batches`` from the video at ``path``.

    ``side``: the model's input side, to which views are squashed (None keeps whole frames, for
    a region of interest). ``keep_whole``: also hand on whole frames. A frame that cannot be
    read ends the iteration early (``short`` is then True; containers can overstate their frame
    count); an error in the reading thread is raised by the iteration."""

    def __init__(
        self, path: str, batches: Sequence[Sequence[int]], side: int | None, keep_whole: bool, ahead: int = 2
    ) -> None:
        self.path, self.batches, self.side, self.keep_whole = path, batches, side, keep_whole
        self.short = False
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_all, name="kosmos2-frames", daemon=True)

    def __enter__(self) -> FrameReader:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting for room
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __iter__(self) -> Iterator[FrameBatch]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _read_all(self) -> None:
        import cv2

        capture = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        position = 0
        try:
            for indices in self.batches:
                frames: dict[int, np.ndarray] = {}
                for index in sorted(indices):
                    if self._stop.is_set():
                        return
                    if index < position or index - position > SEEK_GAP:
                        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                        position = index
                    while position < index and capture.grab():
                        position += 1
                    ok, bgr = capture.read()
                    position += 1
                    if not ok or position - 1 != index:
                        self.short = True
                        break
                    frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                readable = [index for index in indices if index in frames]
                if readable:
                    self._put(self._batch(readable, frames))
                if self.short:
                    break
        except Exception as error:  # noqa: BLE001 - handed to the iterating thread
            self._put(error)
        finally:
            capture.release()
            self._put(None)

    def _batch(self, indices: list[int], frames: dict[int, np.ndarray]) -> FrameBatch:
        whole = [frames[index] for index in indices]
        views = whole if self.side is None else [shrink(frame, self.side) for frame in whole]
        return FrameBatch(indices, list(views), whole if self.keep_whole else [])

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class FrameSeeker:
    """Frames of the video at ``path`` read on demand, in the calling thread: the frames a stride
    skips, which masks are carried through (:mod:`.propagation`). One frame is held at a time."""

    def __init__(self, path: str) -> None:
        import cv2

        self._capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        self._position = 0

    def frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, RGB uint8 (H, W, 3))`` of ``indices`` in their order; ends at the first frame
        that cannot be read. Reads on from one frame to the next where they ascend, else seeks."""
        import cv2

        for index in indices:
            if index != self._position:
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                self._position = index
            ok, bgr = self._capture.read()
            self._position += 1
            if not ok:
                return
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> FrameSeeker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
