"""Serving options from the environment, read and checked in one place at deploy.

===========================  =========================================================  =======
variable                     meaning                                                    default
===========================  =========================================================  =======
``KOSMOS2_MAX_BATCH``        most prompts per decode batch (and images per vision pass)  64 on GPU, 16 on CPU
``KOSMOS2_BATCH_WAIT_MS``    how long a request waits for concurrent ones to share       10
                             its batch (0: no waiting; requests still share a batch
                             when they queue behind a running one)
``KOSMOS2_COMPILE``          ``1`` / ``0``: compile the decode step with CUDA graphs      ``1`` on GPU
``KOSMOS2_MAX_IMAGE_PIXELS`` most pixels (width x height) an uploaded image may have;    100000000
                             larger ones get a 400 before they are decoded
``KOSMOS2_HOST``             address the CLI ``deploy`` server listens on (``0.0.0.0``:  127.0.0.1
                             every interface, e.g. inside Docker)
``KOSMOS2_PORT``             its port                                                   8000
===========================  =========================================================  =======
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from decode_limits import integer_from_environment as _integer

MAX_BATCH_ENV = "KOSMOS2_MAX_BATCH"
BATCH_WAIT_ENV = "KOSMOS2_BATCH_WAIT_MS"
COMPILE_ENV = "KOSMOS2_COMPILE"
HOST_ENV = "KOSMOS2_HOST"
PORT_ENV = "KOSMOS2_PORT"


def listen_address() -> tuple[str, int]:
    """``(host, port)`` for a server this app starts itself (CLI ``deploy``, quick deploy):
    loopback only unless ``KOSMOS2_HOST`` says otherwise. ``uvicorn main:model.app`` (the
    Supervisely entrypoint, ``make serve``) takes its own ``--host`` / ``--port`` instead."""
    host = os.environ.get(HOST_ENV, "").strip() or "127.0.0.1"
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{HOST_ENV} must be a host name or IP address, got '{host}'")
    return host, _integer(PORT_ENV, 8000, 1, 65535)


@dataclass(frozen=True)
class ServingOptions:
    """How the engine runs on ``device``: batch size, cross-request wait, compiled decoding."""

    max_batch_size: int
    batch_wait_s: float
    compile_decoder: bool

    @classmethod
    def from_environment(cls, device: str) -> "ServingOptions":
        """Options for ``device`` ("cpu", "cuda", "cuda:N"); raises ``ValueError`` naming the
        variable when one is malformed."""
        on_gpu = device.startswith("cuda")
        max_batch = _integer(MAX_BATCH_ENV, 64 if on_gpu else 16, 1, 256)
        wait_ms = _integer(BATCH_WAIT_ENV, 10, 0, 1000)
        compile_flag = os.environ.get(COMPILE_ENV, "").strip()
        if compile_flag not in ("", "0", "1"):
            raise ValueError(f"{COMPILE_ENV} must be 0 or 1, got '{compile_flag}'")
        compile_decoder = on_gpu if compile_flag == "" else compile_flag == "1"
        return cls(max_batch, wait_ms / 1000, compile_decoder)
