"""The labelling job on Ray against one process doing the same work, side by side in one run.

The same generated images (PNG files of 64 to 310 pixels, one or two shapes each) are labelled
with the tiny model and default settings (a grounded caption) by:

* **one process**: the job's own two stages (read and decode, then label and write) called in a
  loop in this process, with no Ray: the rate a single-process labeller reaches;
* **engine only**: ``Kosmos2Engine.run`` on the already decoded images, nothing else;
* **Ray, 1 actor** and **Ray, 2 actors**: ``run_job`` on a local Ray with this machine's CPUs.

Each runs ``--rounds`` times, alternating, and the medians are reported. Ray's rate is given two
ways: over the whole job (Ray's start and the actors' model loading included) and steady (from
the first batch received to the last). From the measured figures, the report also works out on
paper what a cluster of N GPUs would give (see :func:`on_paper`).

    python -m bench.label_bench                 # make bench-label
    python -m bench.label_bench --images 2048 --rounds 3

Writes ``bench/results/label-<date>-cpu.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.live_server import REPO, write_result

BATCH = 16


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def one_process(folder: Path, out: Path, checkpoint: str, threads: int) -> dict:
    """The job's stages in a loop in this process: read and decode a batch, label and write it."""
    from kosmos2_jobs.labelling.stages import EngineSpec, LabelImages, read_images
    from supervisely_io.output import ProjectOutput
    from supervisely_io.sources import local_items

    output = ProjectOutput(out)
    stage = LabelImages(EngineSpec(checkpoint, "pytorch", "cpu", threads, BATCH), {}, output, str(out / "c.jsonl"))
    items = local_items(folder)
    started = time.perf_counter()
    for start in range(0, len(items), BATCH):
        part = items[start : start + BATCH]
        batch = {name: np.array([getattr(i, name) for i in part], dtype=object)
                 for name in ("dataset", "name", "path", "image_id", "dataset_id")}  # fmt: skip
        stage(read_images(batch, output, 10**8, 1 << 30))
    return {"images_per_second": len(items) / (time.perf_counter() - started)}


def engine_only(images: list[np.ndarray], checkpoint: str, threads: int) -> dict:
    import torch

    from kosmos2_app.app_files import default_settings
    from kosmos2_engine import Kosmos2Engine, policy_from_settings

    torch.set_num_threads(threads)
    engine = Kosmos2Engine.load(checkpoint, device="cpu", max_batch_size=BATCH)
    engine.warm_up()
    policy = policy_from_settings({}, default_settings())
    started = time.perf_counter()
    for start in range(0, len(images), BATCH):
        engine.run(images[start : start + BATCH], policy)
    return {"images_per_second": len(images) / (time.perf_counter() - started)}


def on_ray(folder: Path, out: Path, checkpoint: str, actors: int) -> dict:
    from kosmos2_jobs.labelling.job import LabelJob, run_job

    job = LabelJob(str(folder), out, checkpoint=checkpoint, device="cpu", actors=actors, batch_size=BATCH)
    summary = run_job(job, progress=lambda message: None)
    assert summary["done"] == summary["images"], summary
    return {"images_per_second": summary["images_per_second"], "steady_images_per_second": summary[
        "steady_images_per_second"], "seconds": summary["labelling_seconds"]}  # fmt: skip


def on_paper(per_actor_rate: float, overhead_fraction: float, gpus=(1, 8, 64)) -> dict:
    """A cluster of N GPUs, one actor each, at ``per_actor_rate`` images/s per GPU, keeps
    ``1 - overhead_fraction`` of it per actor: Ray Data's actors do not share anything but the
    driver's small outcome rows, so the job scales with N until reading (on the CPUs) or the
    output storage becomes the bound. Not measured: arithmetic on measured figures."""
    kept = max(0.0, 1 - overhead_fraction)
    return {f"{n}_gpus_images_per_second": round(n * per_actor_rate * kept, 1) for n in gpus}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    import os

    import ray

    from tests.support.labelling_cases import generated_images, write_folder
    from tests.tiny_model.locate import tiny_checkpoint_folder

    checkpoint, cpus = str(tiny_checkpoint_folder()), os.cpu_count() or 1
    images = [image for _, image in generated_images(args.images)]
    raw: dict[str, list] = {"one_process": [], "engine_only": [], "ray_1_actor": [], "ray_2_actors": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "images", generated_images(args.images))
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            for round_ in range(args.rounds):
                log(f"round {round_ + 1}: one process, engine only, Ray with 1 and 2 actors")
                raw["one_process"].append(one_process(folder, Path(tmp) / f"single{round_}", checkpoint, cpus))
                raw["engine_only"].append(engine_only(images, checkpoint, cpus))
                raw["ray_1_actor"].append(on_ray(folder, Path(tmp) / f"ray1-{round_}", checkpoint, 1))
                raw["ray_2_actors"].append(on_ray(folder, Path(tmp) / f"ray2-{round_}", checkpoint, 2))
        finally:
            ray.shutdown()
    report = summarise(raw, args.images, cpus)
    write_result(report, args.out, f"label-{report['date'][:10]}-cpu.json")
    return report


def summarise(raw: dict, count: int, cpus: int) -> dict:
    def median(name: str, key: str = "images_per_second"):
        return round(statistics.median(run[key] for run in raw[name]), 1)

    single = median("one_process")
    two = median("ray_2_actors", "steady_images_per_second")
    overhead = 1 - two / single
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": f"cpu ({cpus} cores)",
        "checkpoint": "tiny",
        "images": count,
        "settings": "defaults (grounded caption)",
        "batch_size": BATCH,
        "images_per_second": {
            "one_process": single,
            "engine_only": median("engine_only"),
            "ray_1_actor_steady": median("ray_1_actor", "steady_images_per_second"),
            "ray_2_actors_steady": two,
            "ray_1_actor_whole_job": median("ray_1_actor"),
            "ray_2_actors_whole_job": median("ray_2_actors"),
        },
        "ray_2_actors_over_one_process": round(two / single, 3),
        "ray_overhead_fraction": round(overhead, 3),
        "on_paper": {
            "how": "N GPUs x a per-GPU rate x (1 - the overhead measured here); rates per GPU are assumptions "
            "until make gpu-check measures one",
            **{f"at_{rate}_per_gpu": on_paper(rate, max(overhead, 0.0)) for rate in (20, 100)},
        },
        "raw": raw,
    }


if __name__ == "__main__":
    main()
