"""Video files on the server: a private folder, random names, a size cap, and what a file holds.

No name a client sends is ever used on disk: an upload or a download by id goes into
:class:`VideoStore`'s folder (mode 0700, made for this server) under a random name, and is
deleted when its request ends. :meth:`VideoFile.open` reads what the file holds (frames, frame
rate, frame size) with OpenCV and refuses, naming the field, what cannot be a video: nothing, an
image, bytes OpenCV cannot read, frames larger than the pixel limit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# The first bytes of image formats: an image sent as a video is named as one.
IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)
CHUNK = 1 << 20


class VideoRefused(ValueError):
    """A video, or a video request, that cannot be served; the message names the field."""


class VideoTooLarge(VideoRefused):
    """A video over the size cap (a 413)."""


class VideoStore:
    """A folder of this server's video files (private, removed with :meth:`close`)."""

    def __init__(self, root: str | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="kosmos2-videos-", dir=root))

    @contextlib.contextmanager
    def new_file(self) -> Iterator[Path]:
        """A new empty file of random name in the folder, deleted when the block ends."""
        handle, name = tempfile.mkstemp(dir=self.folder, suffix=".video")
        os.close(handle)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def copy_capped(source: BinaryIO | Iterable[bytes], path: Path, max_bytes: int, field: str) -> int:
    """Write ``source`` (a file object, or an iterable of byte chunks) to ``path``; its size.
    ``VideoTooLarge`` as soon as it passes ``max_bytes``."""
    chunks: Iterable[bytes] = iter(lambda: source.read(CHUNK), b"") if hasattr(source, "read") else source
    written = 0
    with open(path, "wb") as out:
        for chunk in chunks:
            written += len(chunk)
            if written > max_bytes:
                raise VideoTooLarge(
                    f"{field}: the video is larger than the {max_bytes >> 20} MB this server reads; "
                    "send a shorter clip, or raise the limit on the server"
                )
            out.write(chunk)
    return written


@dataclass(frozen=True)
class VideoFile:
    """A readable video: its path, frames, frame rate (0 when unknown) and frame size in pixels."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int

    @classmethod
    def open(cls, path: Path, frame_pixels: int, field: str = "files") -> VideoFile:
        """What ``path`` holds; ``VideoRefused`` naming ``field`` when it is empty, an image,
        unreadable, frameless, or has frames over ``frame_pixels``."""
        with open(path, "rb") as file:
            head = file.read(16)
        if not head:
            raise VideoRefused(f"{field}: the video is empty")
        kind = next((name for signature, name in IMAGE_SIGNATURES if head.startswith(signature)), None)
        if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            kind = "a WebP image"
        if kind is not None:
            raise VideoRefused(f"{field}: this is {kind}, not a video; send images to /inference_image")
        import cv2

        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened():
                raise VideoRefused(f"{field}: not a video this server can read (mp4, avi, mov, mkv, webm ...)")
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            if width * height > frame_pixels:
                raise VideoRefused(
                    f"{field}: frames of {width} x {height} have more pixels than the {frame_pixels} a frame may "
                    "have (KOSMOS2_MAX_IMAGE_PIXELS)"
                )
            if frames <= 0 or width <= 0 or height <= 0 or not capture.grab():
                raise VideoRefused(f"{field}: the video has no frame that can be read")
        finally:
            capture.release()
        return cls(path, frames, fps if fps > 0 and fps < 1000 else 0.0, width, height)
