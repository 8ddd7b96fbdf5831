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
===========================  =========================================================  =======
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from decode_limits import integer_from_environment as _integer

MAX_BATCH_ENV = "KOSMOS2_MAX_BATCH"
BATCH_WAIT_ENV = "KOSMOS2_BATCH_WAIT_MS"
COMPILE_ENV = "KOSMOS2_COMPILE"


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
