"""Devices and dtypes: which devices this machine has, the default one, and the dtype a device
runs in (bf16 on CUDA, fp16 where bf16 is unsupported, fp32 on CPU). The one place that chooses
a default device: ``cuda:0`` where CUDA is available, else ``cpu``."""

from __future__ import annotations

import torch


def default_dtype(device: str) -> torch.dtype:
    """bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def available_devices() -> list[str]:
    """The devices of this machine an engine can use: ``cpu``, then ``cuda:0`` … ``cuda:N-1``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{index}" for index in range(count))]


def default_device() -> str:
    """``cuda:0`` where CUDA is available, else ``cpu``."""
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """``ValueError`` unless ``device`` is a CPU or CUDA device of this machine (``cpu``,
    ``cpu:0``, ``cuda``, ``cuda:N`` with N below the device count)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda") or (parsed.type == "cpu" and parsed.index not in (None, 0)):
        raise ValueError(f"Unknown device '{device}': use 'cpu', 'cuda' or 'cuda:N'.")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device '{device}' was asked for but CUDA is not available; use 'cpu'.")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"Device '{device}' is not on this machine: it has {torch.cuda.device_count()} CUDA device(s)."
        )
