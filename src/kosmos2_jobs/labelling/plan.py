"""How a labelling job spreads over a Ray cluster: which device, how many engine actors, and the
CPUs and GPUs each stage asks Ray for. A pure function of the cluster's resources.

On GPUs: one actor per GPU (``num_gpus=1``), reading tasks on CPUs. On CPUs: actors ask for a
fraction of a CPU each and get torch threads for their share of the cores. Ray schedules by
what stages ask for, not by what they use: with ``num_cpus=1`` actors on a 2-core machine, the
reading tasks could wait forever for a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

CPU_CORES_PER_ACTOR = 8  # the default on CPUs: each actor holds fp32 weights (6.7 GB for the real model)
READ_TASK_CPUS_ON_CPU = 0.25


@dataclass(frozen=True)
class ResourcePlan:
    """``actors`` engine actors on ``device``, each asking Ray for ``actor_cpus`` CPUs and
    ``actor_gpus`` GPUs and running ``threads`` torch threads; reading tasks ask ``read_cpus``,
    at most ``read_tasks`` at once (on CPUs, the cores the actors' threads leave, at least one:
    torch's threads slow down badly when other processes take their cores)."""

    device: str
    actors: int
    actor_cpus: float
    actor_gpus: float
    threads: int
    read_cpus: float
    read_tasks: int


def plan_resources(cluster: dict[str, float], device: str | None = None, actors: int | None = None) -> ResourcePlan:
    """The plan for ``cluster`` (``ray.cluster_resources()``: ``CPU``, ``GPU``); ``device``
    (``cpu`` / ``cuda``, default ``cuda`` where the cluster has GPUs) and ``actors`` (default:
    one per GPU, or one per 8 cores) as asked. ``ValueError`` when they cannot be had."""
    cpus, gpus = float(cluster.get("CPU", 0)), int(cluster.get("GPU", 0))
    device = device or ("cuda" if gpus else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got '{device}'")
    if cpus <= 0:
        raise ValueError("The Ray cluster has no CPUs to read images with.")
    if device == "cuda":
        if not gpus:
            raise ValueError("device 'cuda' was asked for, but the Ray cluster has no GPUs.")
        actors = actors or gpus
        if actors > gpus:
            raise ValueError(f"{actors} actors were asked for, but the Ray cluster has {gpus} GPUs (one each).")
        actor_cpus = 1.0 if cpus >= 2 * actors else 0.5
        return ResourcePlan("cuda", actors, actor_cpus, 1.0, 1, 1.0, max(1, int(cpus - actors * actor_cpus)))
    actors = actors or max(1, int(cpus) // CPU_CORES_PER_ACTOR)
    if actors < 1:
        raise ValueError(f"actors must be at least 1, got {actors}")
    share = cpus / actors
    threads = max(1, int((cpus - 1) / actors))  # a core is left for reading
    read_tasks = max(1, int(cpus) - actors * threads)
    return ResourcePlan("cpu", actors, round(min(1.0, share / 2), 3), 0.0, threads, READ_TASK_CPUS_ON_CPU, read_tasks)
