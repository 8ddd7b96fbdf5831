"""Process memory from ``/proc/<pid>/status`` (Linux), shared by the benchmarks."""

from __future__ import annotations

from pathlib import Path


def status_mb(field: str, pid: int | str = "self") -> float:
    """``field`` of process ``pid``'s status in MB: ``VmRSS`` (resident now), ``VmHWM`` (peak
    resident), ``RssAnon`` (private), ``RssFile`` (mapped files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")
