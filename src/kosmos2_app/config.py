"""Every environment variable the app reads, parsed and checked here and nowhere else.

This module imports only the standard library: ``src/main.py`` calls
:func:`limit_opencv_decoding` through it before anything imports ``cv2``.

=============================  ============================================================  ==========
variable                       meaning                                                       default
=============================  ============================================================  ==========
``KOSMOS2_CHECKPOINT``         weights to load instead of the ``models.json`` checkpoint      unset
                               (a folder or a hub id); the operator's choice, never a
                               request's
``KOSMOS2_BACKEND``            ``pytorch``, ``openvino-int8``, ``-int4``, ``-fp32``,           the row's
                               ``-int8-act``: overrides the model row's backend
``KOSMOS2_MAX_BATCH``          most prompts per decode batch (and images per vision pass)     64 GPU, 16 CPU
``KOSMOS2_BATCH_WAIT_MS``      how long a request to an idle engine waits for concurrent      0
                               ones to share its batch (requests that arrive while the
                               engine is busy share the next run anyway)
``KOSMOS2_COMPILE``            ``1`` / ``0``: compile the decode step with CUDA graphs        1 on GPU
``KOSMOS2_MAX_IMAGE_PIXELS``   most pixels (width x height) an image may have; larger ones    100000000
                               get a 400 before they are decoded
``KOSMOS2_MAX_REQUEST_PIXELS`` most pixels summed over the images of one request; more     1000000000
                               get a 413 before any is decoded
``KOSMOS2_DECODE_BUDGET_PIXELS`` most pixels decoding at once across the server (each         the image
                               image is squashed to the model's input as soon as it is        limit
                               decoded); a request that waits over 30 s for its share
                               gets a 503 with ``Retry-After``
``KOSMOS2_HOST`` / ``_PORT``   where a server this app starts itself listens                  127.0.0.1 / 8000
``KOSMOS2_API_KEY``            when set, every route but the health checks needs this key     unset
                               (HTTP Basic password, or ``Authorization: Bearer``)
``KOSMOS2_URL_ALLOWLIST``      hosts, ``host:port``, IPs or CIDRs that ``image_url`` may      none
                               reach although they are loopback, private or link-local
``KOSMOS2_URL_TIMEOUT_S``      deadline of one whole ``image_url`` fetch (connecting,        10
                               redirects, every read)
``KOSMOS2_URL_MAX_MB``         largest ``image_url`` body                                     50
``KOSMOS2_URL_CONCURRENCY``    ``image_url`` fetches in flight at once; more wait             4
``KOSMOS2_MAX_REQUEST_MB``     largest request body (uploads included); a larger one is a     256
                               413
``KOSMOS2_DEBUG_ROUTE``        ``1``: keep the SDK's ``/debug`` route (starts debugpy)         0
``KOSMOS2_MAX_VIDEO_MB``       largest video read by id from Supervisely (an uploaded one     2048
                               is a request body: ``KOSMOS2_MAX_REQUEST_MB``)
``KOSMOS2_MAX_VIDEO_FRAMES``   most frames one video request may run the model on (after      20000
                               ``stride``); frames have at most ``KOSMOS2_MAX_IMAGE_PIXELS``
``KOSMOS2_REID_WEIGHTS``       OSNet re-identification weights for the BoT-SORT tracker (a   unset: off
                               file on the server); tracking matches by motion alone without
``KOSMOS2_SAM2``               the SAM 2 that ``masks: true`` uses (a folder, or a hub id   the model row's
                               in the local cache), loaded on the first mask request;         (``meta.sam2``),
                               stands for the model row's choice                             else hiera-tiny
``KOSMOS2_SAM2_AT_DEPLOY``     ``1``: load and warm SAM 2 at deploy (the deploy fails when it  0
                               cannot), so that the first mask request pays nothing
``KOSMOS2_CLASSES``            the declared classes: names separated by commas, or JSON, a    COCO's 80
                               list of names or ``{"name": "phrase"}`` or ``{"name":
                               {"phrase": ..., "geometry": "mask"}}`` (see
                               :mod:`.ontology`); a deploy's ``classes`` replaces them
=============================  ============================================================  ==========

The SDK's own variables that the app reads too: ``ENV`` (``production`` on the platform),
``SERVER_ADDRESS`` (the configured Supervisely instance), ``API_TOKEN`` (redacted from logs) and
``LOG_LEVEL`` (uvicorn's access log, a line per request, only at ``debug``).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

CHECKPOINT_ENV = "KOSMOS2_CHECKPOINT"
BACKEND_ENV = "KOSMOS2_BACKEND"
MAX_BATCH_ENV = "KOSMOS2_MAX_BATCH"
BATCH_WAIT_ENV = "KOSMOS2_BATCH_WAIT_MS"
COMPILE_ENV = "KOSMOS2_COMPILE"
MAX_IMAGE_PIXELS_ENV = "KOSMOS2_MAX_IMAGE_PIXELS"
MAX_REQUEST_PIXELS_ENV = "KOSMOS2_MAX_REQUEST_PIXELS"
DECODE_BUDGET_ENV = "KOSMOS2_DECODE_BUDGET_PIXELS"
HOST_ENV = "KOSMOS2_HOST"
CLASSES_ENV = "KOSMOS2_CLASSES"
PORT_ENV = "KOSMOS2_PORT"
API_KEY_ENV = "KOSMOS2_API_KEY"
URL_ALLOWLIST_ENV = "KOSMOS2_URL_ALLOWLIST"
URL_TIMEOUT_ENV = "KOSMOS2_URL_TIMEOUT_S"
URL_MAX_MB_ENV = "KOSMOS2_URL_MAX_MB"
URL_CONCURRENCY_ENV = "KOSMOS2_URL_CONCURRENCY"
DEBUG_ROUTE_ENV = "KOSMOS2_DEBUG_ROUTE"
MAX_REQUEST_MB_ENV = "KOSMOS2_MAX_REQUEST_MB"
MAX_VIDEO_MB_ENV = "KOSMOS2_MAX_VIDEO_MB"
MAX_VIDEO_FRAMES_ENV = "KOSMOS2_MAX_VIDEO_FRAMES"
REID_WEIGHTS_ENV = "KOSMOS2_REID_WEIGHTS"
SAM2_ENV = "KOSMOS2_SAM2"
SAM2_AT_DEPLOY_ENV = "KOSMOS2_SAM2_AT_DEPLOY"
DEFAULT_SAM2 = "facebook/sam2.1-hiera-tiny"
OPENCV_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_CEILING = 2**30


def _text(name: str) -> str:
    return os.environ.get(name, "").strip()


def integer_from_environment(name: str, default: int, low: int, high: int) -> int:
    """Integer environment variable ``name`` in [``low``, ``high``], ``default`` when unset;
    ``ValueError`` naming it when malformed."""
    raw = _text(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got '{raw}'") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value}")
    return value


def _flag(name: str, default: bool) -> bool:
    raw = _text(name)
    if raw not in ("", "0", "1"):
        raise ValueError(f"{name} must be 0 or 1, got '{raw}'")
    return default if raw == "" else raw == "1"


def max_image_pixels() -> int:
    """``KOSMOS2_MAX_IMAGE_PIXELS``: the most pixels an image may have (a small compressed file
    can decode to gigabytes; Kosmos-2 sees 224 x 224 anyway)."""
    return integer_from_environment(MAX_IMAGE_PIXELS_ENV, 100_000_000, 1, OPENCV_CEILING)


@dataclass(frozen=True)
class PixelLimits:
    """What images may cost: per image, per request, and decoding at once across the server."""

    per_image: int
    per_request: int
    decoding_at_once: int

    @classmethod
    def from_environment(cls) -> PixelLimits:
        per_image = max_image_pixels()
        per_request = integer_from_environment(MAX_REQUEST_PIXELS_ENV, 1_000_000_000, 1, 2**40)
        budget = integer_from_environment(DECODE_BUDGET_ENV, per_image, 1, 2**40)
        if budget < per_image:
            raise ValueError(
                f"{DECODE_BUDGET_ENV} ({budget}) must be at least {MAX_IMAGE_PIXELS_ENV} ({per_image}): "
                "the largest image allowed must fit in it"
            )
        return cls(per_image, per_request, budget)


def limit_opencv_decoding() -> int:
    """Set OpenCV's pixel ceiling (read once, when ``cv2`` is imported) to
    :func:`max_image_pixels`; call before ``import cv2``. Returns the limit."""
    limit = max_image_pixels()
    os.environ[OPENCV_PIXELS_ENV] = str(limit)
    return limit


def return_freed_memory() -> bool:
    """Have the C allocator (glibc) hand every block of 1 MB or more back to the system as soon
    as it is freed; call once at start-up. Without it glibc raises its threshold after the
    first large free, keeps later image-sized blocks in per-thread arenas, and a server that
    decoded a few large images in two threads keeps twice their size. False where the C library
    is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 20)) and bool(libc.mallopt(m_trim_threshold, 8 << 20))
    except (OSError, AttributeError):
        return False


def max_body_bytes() -> int:
    """``KOSMOS2_MAX_REQUEST_MB`` in bytes: the largest request body accepted."""
    return integer_from_environment(MAX_REQUEST_MB_ENV, 256, 1, 4096) << 20


@dataclass(frozen=True)
class VideoLimits:
    """What a video request may cost.

    Attributes:
        max_bytes: largest video downloaded by id (uploads are capped as request bodies).
        max_frames: most frames one request runs the model on.
        frame_pixels: most pixels (width x height) a frame may have.
        reid_weights: the operator's OSNet weights for the tracker's re-identification, or None.
    """

    max_bytes: int = 2048 << 20
    max_frames: int = 20000
    frame_pixels: int = 100_000_000
    reid_weights: str | None = None

    @classmethod
    def from_environment(cls) -> VideoLimits:
        return cls(
            integer_from_environment(MAX_VIDEO_MB_ENV, 2048, 1, 1 << 20) << 20,
            integer_from_environment(MAX_VIDEO_FRAMES_ENV, 20000, 1, 10_000_000),
            max_image_pixels(),
            _text(REID_WEIGHTS_ENV) or None,
        )


def sam2_override() -> str | None:
    """``KOSMOS2_SAM2``: the operator's SAM 2 (a folder or a hub id), standing for the model
    row's choice; None when unset."""
    return _text(SAM2_ENV) or None


def sam2_checkpoint() -> str:
    """The SAM 2 of a job with no model row (labelling, evaluation): ``KOSMOS2_SAM2``, else
    :data:`DEFAULT_SAM2`."""
    return sam2_override() or DEFAULT_SAM2


def listen_address() -> tuple[str, int]:
    """``(host, port)`` for a server this app starts itself (CLI ``deploy``, quick deploy):
    loopback unless ``KOSMOS2_HOST`` says otherwise. ``uvicorn main:model.app`` takes its own
    ``--host`` / ``--port``."""
    host = _text(HOST_ENV) or "127.0.0.1"
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{HOST_ENV} must be a host name or IP address, got '{host}'")
    return host, integer_from_environment(PORT_ENV, 8000, 1, 65535)


def declared_classes() -> str | None:
    """``KOSMOS2_CLASSES`` as text (parsed by :class:`~.ontology.Ontology`), None when unset."""
    return _text(CLASSES_ENV) or None


def checkpoint_override() -> str | None:
    """``KOSMOS2_CHECKPOINT``: the operator's folder or hub id, standing for the listed one."""
    return _text(CHECKPOINT_ENV) or None


def backend_override() -> str | None:
    """``KOSMOS2_BACKEND``, lower-cased, or None when unset (checked by the caller)."""
    return _text(BACKEND_ENV).lower() or None


@dataclass(frozen=True)
class ServingOptions:
    """How the engine runs on ``device``: batch size, cross-request wait, compiled decoding;
    and whether SAM 2 is loaded at deploy rather than on the first mask request."""

    max_batch_size: int
    batch_wait_s: float
    compile_decoder: bool
    sam2_at_deploy: bool = False

    @classmethod
    def from_environment(cls, device: str) -> ServingOptions:
        """Options for ``device`` ("cpu", "cuda", "cuda:N"); ``ValueError`` naming the variable
        when one is malformed."""
        on_gpu = device.startswith("cuda")
        max_batch = integer_from_environment(MAX_BATCH_ENV, 64 if on_gpu else 16, 1, 256)
        wait_ms = integer_from_environment(BATCH_WAIT_ENV, 0, 0, 1000)
        return cls(max_batch, wait_ms / 1000, _flag(COMPILE_ENV, on_gpu), _flag(SAM2_AT_DEPLOY_ENV, False))


@dataclass(frozen=True)
class UrlFetchPolicy:
    """Where and how ``image_url`` may be fetched.

    Attributes:
        allowlist: entries the operator allows although they are not public addresses: a host
            name (``minio.local``), ``host:port``, an IP, or a CIDR (``10.0.0.0/8``).
        timeout_s: the deadline of one whole fetch (connecting, redirects, every read).
        max_bytes: largest body read; a larger one is refused.
        concurrency: fetches in flight at once; further ones wait for a slot.
    """

    allowlist: tuple[str, ...] = ()
    timeout_s: float = 10.0
    max_bytes: int = 50 << 20
    concurrency: int = 4

    @classmethod
    def from_environment(cls) -> UrlFetchPolicy:
        entries = tuple(e.strip().lower() for e in _text(URL_ALLOWLIST_ENV).split(",") if e.strip())
        for entry in entries:
            _check_allowlist_entry(entry)
        return cls(
            entries,
            float(integer_from_environment(URL_TIMEOUT_ENV, 10, 1, 300)),
            integer_from_environment(URL_MAX_MB_ENV, 50, 1, 1024) << 20,
            integer_from_environment(URL_CONCURRENCY_ENV, 4, 1, 64),
        )


def _check_allowlist_entry(entry: str) -> None:
    try:
        ipaddress.ip_network(entry, strict=False)
        return
    except ValueError:
        pass
    host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if not host or any(c.isspace() or c in "/?#@" for c in host) or (port and not port.isdigit()):
        raise ValueError(f"{URL_ALLOWLIST_ENV} entries must be host names, host:port, IPs or CIDRs; got '{entry}'")


@dataclass(frozen=True)
class AccessPolicy:
    """Who may call what.

    Attributes:
        api_key: ``KOSMOS2_API_KEY``; when set, every route but the health checks needs it.
        production: running on the Supervisely platform (``ENV=production``).
        server_address: the configured Supervisely instance (``SERVER_ADDRESS``), normalised;
            a request may name no other.
        debug_route: keep the SDK's ``/debug`` (debugpy) route.
    """

    api_key: str | None = None
    production: bool = False
    server_address: str | None = None
    debug_route: bool = False

    @classmethod
    def from_environment(cls) -> AccessPolicy:
        key = _text(API_KEY_ENV) or None
        if key is not None and len(key) < 16:
            raise ValueError(f"{API_KEY_ENV} must be at least 16 characters (a random string)")
        return cls(
            key,
            _text("ENV") == "production",
            normalise_server_address(_text("SERVER_ADDRESS")),
            _flag(DEBUG_ROUTE_ENV, False),
        )


def normalise_server_address(address: str | None) -> str | None:
    """``https://host[:port]`` form of a Supervisely address (scheme added when missing, no
    trailing slash), lower-cased; None for nothing."""
    address = (address or "").strip()
    if not address:
        return None
    if "://" not in address:
        address = "https://" + address
    return address.rstrip("/").lower()


def access_log() -> bool:
    """Whether uvicorn logs every request (at info level): only at the SDK's ``LOG_LEVEL`` debug
    or trace; otherwise a busy server would write a line per request."""
    return (_text("LOG_LEVEL") or _text("LOGLEVEL")).lower() in ("debug", "trace")


def api_token() -> str | None:
    """The SDK's ``API_TOKEN`` (the session's token), kept out of every log."""
    return _text("API_TOKEN") or None


SUPERVISELY_ENV = ("SERVER_ADDRESS", "API_TOKEN")


def supervisely_env() -> dict[str, str]:
    """The SDK's instance address and token, where set: what ``sly.Api.from_env()`` reads, handed
    to the labelling job's Ray workers (on a cluster they do not share this shell)."""
    return {name: os.environ[name] for name in SUPERVISELY_ENV if os.environ.get(name)}


def ray_address() -> str | None:
    """Ray's own ``RAY_ADDRESS``: the cluster a labelling job joins; None for a new one here."""
    return _text("RAY_ADDRESS") or None


def team_id() -> int | None:
    """The SDK's ``TEAM_ID``: the team whose files an evaluation report is uploaded to."""
    value = _text("TEAM_ID")
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"TEAM_ID must be a team's number, got '{value}'")
    return int(value)
