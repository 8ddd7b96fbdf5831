"""A labelling job: every image of a source through Kosmos-2 on Ray Data, written as a
Supervisely-format project, and uploaded to Supervisely when asked.

The driver lists the images, skips those whose annotation is already written, and streams the
rest through two Ray Data stages (:mod:`.stages`): reading tasks, then an actor pool of engines.
Workers write every file; the driver receives one small row per image (its outcome) and writes
only the project meta, the failures file and the summary. Without ``RAY_ADDRESS`` Ray starts on
this machine; with it, the same job runs on that cluster (whose nodes must see ``out``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kosmos2_app import MaskOptions, meta_with, sam2_checkpoint, settings_policy
from supervisely_io.output import ProjectOutput
from supervisely_io.sources import Item, default_api_factory, local_items, remote_items, supervisely_source

from .interrupts import InterruptWatch
from .plan import ResourcePlan, plan_resources
from .stages import EngineSpec, LabelImages, read_images

CLASSES_LOG = "labelling-classes.jsonl"
UPLOAD_MODES = ("create", "append", "replace")


@dataclass(frozen=True)
class LabelJob:
    """What to label and how; checked on construction (``ValueError`` naming the field).

    Attributes:
        source: a folder of images, a Supervisely-format project folder, ``project:<id>`` or
            ``dataset:<id>``.
        out: the output project folder (for an upload, where annotations are kept until
            uploaded, and what a rerun resumes from).
        settings: the server's inference settings (task, phrases, question, ...), over the
            defaults of ``inference_settings.yaml``.
        checkpoint: hub id or folder of the weights.
        backend: ``pytorch`` or an OpenVINO variant (CPU only).
        device: ``cpu`` or ``cuda``; default ``cuda`` where the cluster has GPUs.
        actors: engine actors; default one per GPU, or one per 8 CPU cores.
        batch_size: images per engine call.
        upload: ``None`` (write the project folder only), ``create`` (a new project beside
            the source), ``append`` (add the labels to the source's) or ``replace`` (replace the
            source's annotations); remote sources only.
        max_image_pixels / max_image_bytes: larger images are failures, not read.
        sam2: the SAM 2 (hub id or folder) that segments every box when ``settings`` say
            ``masks: true``; default ``KOSMOS2_SAM2``, as the server's.
        api_factory: makes the ``supervisely.Api`` of remote sources and uploads; it is called
            in the reading tasks too, so it must pickle.
    """

    source: str
    out: Path
    settings: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    backend: str = "pytorch"
    device: str | None = None
    actors: int | None = None
    batch_size: int = 16
    upload: str | None = None
    max_image_pixels: int = 100_000_000
    max_image_bytes: int = 256 << 20
    sam2: str = field(default_factory=sam2_checkpoint)
    api_factory: Callable[[], Any] = default_api_factory
    masks: MaskOptions = field(init=False, repr=False)  # parsed from ``settings``

    def __post_init__(self):
        settings_policy(dict(self.settings))  # SettingsError names the field
        object.__setattr__(self, "masks", MaskOptions.parse(self.settings))
        if not self.checkpoint:
            raise ValueError("checkpoint: name a hub id or a folder of weights")
        if self.batch_size < 1 or (self.actors is not None and self.actors < 1):
            raise ValueError("batch_size and actors must be at least 1")
        if self.upload is not None and self.upload not in UPLOAD_MODES:
            raise ValueError(f"upload must be one of {', '.join(UPLOAD_MODES)}, got '{self.upload}'")
        if self.upload is not None and self.remote is None:
            raise ValueError("upload needs a Supervisely source (project:<id> or dataset:<id>)")
        if self.remote is None:
            out, source = Path(self.out).resolve(), Path(self.source).resolve()
            if out.is_relative_to(source) or source.is_relative_to(out):
                raise ValueError(
                    f"--out {self.out} and the source {self.source} must be apart, neither inside the other: "
                    "the job would write into its source and label its own output on every rerun"
                )

    @property
    def remote(self) -> tuple[str, int] | None:
        """``("project" | "dataset", id)`` for a Supervisely source, else ``None``."""
        return supervisely_source(self.source)

    def items(self) -> list[Item]:
        """Every image of the source, listed by the driver."""
        if self.remote is None:
            return local_items(Path(self.source))
        kind, number = self.remote
        api = self.api_factory()
        return list(remote_items(api, project_id=number if kind == "project" else None,
                                 dataset_id=number if kind == "dataset" else None))  # fmt: skip


@dataclass
class Tally:
    """What the driver counts from the rows it receives, and when: the rate after the first
    batch arrived leaves out Ray's start and the actors' model loading."""

    done: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    first_batch: tuple[float, int] | None = None  # (when, images labelled then)
    last_at: float = 0.0

    def add(self, batch: dict[str, Any]) -> None:
        for key, outcome, error in zip(batch["key"], batch["outcome"], batch["error"]):
            if outcome == "failed":
                self.failures.append({"image": str(key), "reason": str(error)})
            else:
                self.done += 1
        self.last_at = time.monotonic()
        if self.first_batch is None:
            self.first_batch = (self.last_at, self.done)

    def steady_rate(self) -> float | None:
        """Images per second from the first batch received to the last (None with one batch)."""
        if self.first_batch is None or self.last_at <= self.first_batch[0]:
            return None
        return round((self.done - self.first_batch[1]) / (self.last_at - self.first_batch[0]), 3)


def run_job(job: LabelJob, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Label every image of ``job.source`` not labelled yet; the summary (also written to the
    output). ``KeyboardInterrupt`` stops it: what is written stays, and a rerun finishes."""
    started = time.monotonic()
    output = ProjectOutput(Path(job.out).resolve(), keep_images=job.upload is None)
    items = job.items()
    output.sweep_temporaries()
    unusable = [{"image": item.key, "reason": item.problem} for item in items if item.problem]
    usable = [item for item in items if not item.problem]
    output.ensure_datasets(usable)
    output.write_meta(_meta(output, job.masks.masks))
    pending = [item for item in usable if not output.is_done(item)]
    tally, plan, interrupted = Tally(failures=list(unusable)), None, False
    progress(f"{len(items)} images in {job.source}: {len(usable) - len(pending)} done before, {len(pending)} to label.")
    labelling_started = time.monotonic()
    try:
        if pending:
            with InterruptWatch() as watch:
                plan = _label(job, output, pending, tally, watch)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        seconds = time.monotonic() - labelling_started
        output.sweep_temporaries()
        output.write_meta(_meta(output, job.masks.masks))
        summary = {
            "source": job.source,
            "output": str(output.root),
            "images": len(items),
            "done": tally.done,
            "skipped": len(usable) - len(pending),
            "failed": len(tally.failures),
            "labelling_seconds": round(seconds, 2),
            "images_per_second": round(tally.done / seconds, 3) if seconds > 0 and tally.done else 0.0,
            "steady_images_per_second": tally.steady_rate(),
            "seconds": round(time.monotonic() - started, 2),
            "device": plan.device if plan else None,
            "actors": plan.actors if plan else 0,
            "interrupted": interrupted,
            "failures_file": str(output.write_failures(tally.failures)),
        }
        output.write_summary(summary)
    if job.upload is not None:
        from supervisely_io.upload import upload_project

        summary["upload"] = upload_project(job, output, usable, progress)
        output.write_summary(summary)
    return summary


def _meta(output: ProjectOutput, masks: bool):
    """The project meta: what was written before, the task tags, and every class the actors
    logged (an annotation's classes are logged before it is written); with ``masks``, those
    classes take any geometry (rectangles and bitmaps)."""
    log = output.root / CLASSES_LOG
    names = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line] if log.is_file() else []
    return meta_with(output.meta(), sorted(set(names)), masks)


CLUSTER_WAIT_S = 15.0


def connect_ray():
    """Ray: the cluster of ``RAY_ADDRESS`` when set, else a new one on this machine (never one
    that ``/tmp/ray/ray_current_cluster`` names: a cluster stopped uncleanly leaves it behind, and
    joining it waits for a cluster that is gone). ``ConnectionError`` within
    :data:`CLUSTER_WAIT_S` when ``RAY_ADDRESS`` names a host and port that nothing answers on
    (Ray itself retries such an address without end)."""
    import ray

    from kosmos2_app import ray_address

    if not ray.is_initialized():
        address = ray_address()
        if address:
            check_cluster_reachable(address, CLUSTER_WAIT_S)
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=True)
    return ray


def check_cluster_reachable(address: str, wait_s: float) -> None:
    """``ConnectionError`` unless something accepts TCP connections at ``address``
    (``host:port`` or ``ray://host:port``) within ``wait_s``; other forms (``auto``) pass."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
            return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"The Ray cluster at RAY_ADDRESS={address} did not answer within {wait_s:g} s ({error}). "
                    "Start it (ray start --head), or unset RAY_ADDRESS to run on a new cluster on this machine."
                ) from None
            time.sleep(0.5)


def _label(
    job: LabelJob, output: ProjectOutput, pending: list[Item], tally: Tally, watch: InterruptWatch
) -> ResourcePlan:
    ray = connect_ray()
    from ray import data as ray_data

    from kosmos2_app import supervisely_env

    plan = plan_resources(ray.cluster_resources(), job.device, job.actors)
    sam2 = job.sam2 if job.masks.masks else None
    spec = EngineSpec(job.checkpoint, job.backend, plan.device, plan.threads, max(job.batch_size, 1), sam2)
    read_args = {"output": output, "max_pixels": job.max_image_pixels, "max_bytes": job.max_image_bytes,
                 "api_factory": job.api_factory if job.remote else None}  # fmt: skip
    read_options = {"runtime_env": {"env_vars": supervisely_env()}} if job.remote else {}
    dataset = ray_data.from_items([item.row() for item in pending], override_num_blocks=_blocks(pending, job))
    labelled = dataset.map_batches(
        read_images,
        fn_kwargs=read_args,
        batch_size=job.batch_size,
        num_cpus=plan.read_cpus,
        concurrency=plan.read_tasks,
        **read_options,
    ).map_batches(
        LabelImages,
        fn_constructor_kwargs={
            "spec": spec,
            "settings": dict(job.settings),
            "output": output,
            "classes_log": str(output.root / CLASSES_LOG),
        },  # fmt: skip
        compute=ray_data.ActorPoolStrategy(size=plan.actors),
        batch_size=job.batch_size,
        num_cpus=plan.actor_cpus,
        num_gpus=plan.actor_gpus,
    )
    for batch in labelled.iter_batches(batch_size=None, batch_format="numpy"):
        tally.add(batch)
        watch.check()
    watch.check()
    return plan


def _blocks(pending: list[Item], job: LabelJob) -> int:
    """One block per batch, so that reading spreads over tasks from the start (at most 2000)."""
    return max(1, min(2000, -(-len(pending) // job.batch_size)))
