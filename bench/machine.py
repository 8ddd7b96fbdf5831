"""What a benchmark ran on, and the device measurements every benchmark shares."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from datetime import UTC, datetime

import torch
import transformers

# Peak memory bandwidth, GB/s, from the vendors' data sheets (SXM parts).
GPU_PEAK_GB_PER_S = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L4": 300.0, "A10": 600.0}
_state = {"device": "cpu"}


def environment(device: str) -> dict:
    """Device, versions and host: recorded with every result."""
    _state["device"] = device
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device,
        "device_name": _device_name(device),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        info["cuda"] = torch.version.cuda
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()}"


def synchronize() -> None:
    if _state["device"].startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    if _state["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib() -> float:
    """Peak device memory allocated by torch since the last reset (GPU), or the process's peak
    resident memory (CPU, since start: Linux reports it in KiB)."""
    if _state["device"].startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bandwidth_share(achieved_gb_per_s: float) -> dict:
    """The device's peak bandwidth (GPU: data sheet; CPU: a measured 1 GiB copy) and the share
    of it achieved."""
    if _state["device"].startswith("cuda"):
        name = torch.cuda.get_device_name(_state["device"])
        peak = next((value for key, value in GPU_PEAK_GB_PER_S.items() if key in name), None)
        source = "data sheet"
    else:
        peak, source = _measured_copy_gb_per_s(), "measured copy"
    share = achieved_gb_per_s / peak if peak else None
    return {"peak_gb_per_s": peak, "peak_source": source, "share_of_peak": share}


def _measured_copy_gb_per_s() -> float:
    source = torch.ones(2**28)  # 1 GiB of fp32
    target = torch.empty_like(source)
    target.copy_(source)
    start = time.perf_counter()
    for _ in range(3):
        target.copy_(source)
    seconds = (time.perf_counter() - start) / 3
    return 2 * source.numel() * 4 / seconds / 1e9  # read + write
