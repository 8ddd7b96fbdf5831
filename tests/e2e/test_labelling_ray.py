"""The labelling job on a real local Ray with the tiny model: every annotation is what the
deployed server returns, settings are honoured, a killed actor and an interrupted driver lose
nothing and write nothing twice, bad images are listed, and a Supervisely source is uploaded.

One Ray cluster serves the module (started here, as ``ray.init()`` starts one); the command's
runs in subprocesses join it through ``RAY_ADDRESS``, as a user joins a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kosmos2_jobs.labelling.job import LabelJob, run_job
from tests.support import labelling_cases as cases
from tests.support.app_harness import REPO, TINY_SAM2

IMAGES = cases.generated_images(40)
ACTOR = "MapBatches(LabelImages)"


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=300 << 20, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def captions(served):
    """The server's annotation of each of the 40 images, default settings (a grounded caption)."""
    return cases.server_annotations(served[1], IMAGES, {})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return cases.write_folder(tmp_path_factory.mktemp("in") / "scenes", IMAGES)


def _job(source, out, checkpoint, **options) -> LabelJob:
    options = {"actors": 2, "batch_size": 4, **options}
    return LabelJob(str(source), Path(out), checkpoint=checkpoint, **options)


def _command(source, out, checkpoint, address, *extra) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": address, "KOSMOS2_CHECKPOINT": checkpoint}
    argv = [sys.executable, "src/label.py", str(source), "--out", str(out), "--actors", "1", "--batch-size", "2"]
    return subprocess.Popen(
        [*argv, *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_as_a_terminal_starts_it,
    )  # fmt: skip  (see test_readme._run)


def _as_a_terminal_starts_it() -> None:
    """Ctrl-C and Ctrl-\\ at their defaults in the command, as a shell's command gets them. An
    ignored signal stays ignored across exec: in the whole suite (not alone) the command started
    with SIGINT and SIGQUIT ignored (``SigIgn: ...81001006``, inherited from this test process;
    C's ``system()`` ignores both in its caller while it waits), and ran to its end through the
    Ctrl-C, three times in four runs today."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _wait_for_annotations(out: Path, count: int, process: subprocess.Popen, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(list(out.glob("**/ann/*.json")))
        if done >= count:
            return done
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} annotations after {timeout} s")


def _actors() -> list[psutil.Process]:
    """The labelling actors' processes (Ray names them after the stage)."""
    return [p for p in psutil.process_iter(["cmdline"]) if ACTOR in " ".join(p.info["cmdline"] or [])]


def _signal_masks(pid: int) -> str:
    """The SigBlk, SigIgn and SigCgt lines of a process (Linux), or "" elsewhere."""
    status = Path(f"/proc/{pid}/status")
    lines = status.read_text().splitlines() if status.exists() else []
    return " ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _no_temporaries(out: Path) -> None:
    assert [p.name for p in out.rglob("*") if p.name.endswith(".kosmos2-tmp")] == []


def test_a_folder_and_a_project_folder_are_labelled_as_the_server_labels(
    ray_address, captions, folder, tmp_path, tiny_checkpoint
):
    import supervisely as sly

    summary = run_job(_job(folder, tmp_path / "out", tiny_checkpoint), progress=lambda m: None)
    assert (summary["images"], summary["done"], summary["skipped"], summary["failed"]) == (40, 40, 0, 0)
    assert cases.written_annotations(tmp_path / "out") == captions
    project = sly.Project(str(tmp_path / "out"), sly.OpenMode.READ)  # the SDK reads it back
    assert sorted(ds.name for ds in project.datasets) == ["scenes", "scenes/more"] and project.total_items == 40
    used = {o["classTitle"] for ann in map(json.loads, captions.values()) for o in ann["objects"]}
    assert {c.name for c in project.meta.obj_classes} == used
    assert {t.name for t in project.meta.tag_metas} == {"confidence", "caption", "answer", "description"}

    source = cases.write_project_folder(tmp_path / "project", IMAGES)
    summary = run_job(_job(source, tmp_path / "out2", tiny_checkpoint, actors=1), progress=lambda m: None)
    assert summary["done"] == 40 and cases.written_annotations(tmp_path / "out2") == captions
    assert {p.relative_to(tmp_path / "out2").parts[0] for p in (tmp_path / "out2").glob("**/ann")} == {"outer"}
    assert len(list((tmp_path / "out2" / "outer" / "datasets" / "inner" / "ann").iterdir())) == 14


GROUNDING = {"task": "phrase_grounding", "phrases": ["a red circle", "a blue square", "a green triangle"]}
MASKS = {**GROUNDING, "masks": True}
VQA = {"task": "vqa", "question": "What colour is the circle?"}


def test_grounding_settings_with_masks_are_honoured_and_bad_images_listed_with_their_reason(
    ray_address, served, tmp_path, tiny_checkpoint
):
    """Phrase grounding with ``masks: true``: every annotation is the server's (the tiny SAM 2's
    bitmaps included), and the SDK reads the project back against its meta."""
    import supervisely as sly

    images = IMAGES[:8]
    source = cases.write_folder(tmp_path / "in", images, bad=True)
    job = _job(source, tmp_path / "out", tiny_checkpoint, settings=MASKS, actors=1, sam2=str(TINY_SAM2))
    summary = run_job(job, progress=lambda m: None)
    assert (summary["done"], summary["failed"]) == (8, 3)
    failures = [json.loads(line) for line in Path(summary["failures_file"]).read_text().splitlines()]
    assert sorted(f["image"].rsplit("/", 1)[1] for f in failures) == sorted(cases.BAD_FILES)
    assert all("could not be read" in f["reason"] for f in failures)
    written = cases.written_annotations(tmp_path / "out")
    assert written == cases.server_annotations(served[1], images, MASKS)
    objects = [o for ann in map(json.loads, written.values()) for o in ann["objects"]]
    assert {o["classTitle"] for o in objects} <= set(GROUNDING["phrases"])
    bitmaps = [o for o in objects if o["geometryType"] == "bitmap"]  # a box whose mask is empty stays a rectangle
    assert len(bitmaps) >= len(objects) / 2 and {o["geometryType"] for o in objects} <= {"bitmap", "rectangle"}
    project = sly.Project(str(tmp_path / "out"), sly.OpenMode.READ)
    assert {c.geometry_type for c in project.meta.obj_classes} == {sly.AnyGeometry}
    anns = [sly.Annotation.load_json_file(path, project.meta) for path in (tmp_path / "out").glob("**/ann/*.json")]
    assert sum(isinstance(label.geometry, sly.Bitmap) for ann in anns for label in ann.labels) == len(bitmaps)


def test_a_killed_actor_and_an_interrupted_driver_lose_nothing_and_write_nothing_twice(
    ray_address, captions, folder, tmp_path, tiny_checkpoint
):
    """One actor, killed mid-run: Ray starts another, which goes on labelling (its batches
    retried); then Ctrl-C: the driver stops, what is written stays, and the same command
    labels only the rest."""
    out = tmp_path / "out"
    process = _command(folder, out, tiny_checkpoint, ray_address)
    done_at_kill = _wait_for_annotations(out, 4, process)
    [victim] = _actors()
    victim.kill()
    _wait_for_annotations(out, done_at_kill + 4, process)  # written by the actor started in its place
    signals = _signal_masks(process.pid)  # for the message below: is SIGINT ignored, blocked, caught?
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    interrupted = process.returncode == 130 and "run the same command again" in stderr
    assert interrupted, (process.returncode, signals, stdout[-2000:], stderr[-3000:])
    before = {p: p.stat().st_mtime_ns for p in out.glob("**/ann/*.json")}
    assert done_at_kill + 4 <= len(before) < 40
    _no_temporaries(out)

    rerun = _command(folder, out, tiny_checkpoint, ray_address)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    assert f"Labelled {40 - len(before)} of 40 images ({len(before)} done before, 0 failed)" in stdout
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in before.items())  # nothing redone
    assert cases.written_annotations(out) == captions
    _no_temporaries(out)
    assert len(list(out.glob("**/ann/*.json"))) == len(list(out.glob("**/img/*.png"))) == 40
    summary = json.loads((out / "labelling-summary.json").read_text())
    assert summary["skipped"] == len(before) and not summary["interrupted"]


def test_a_supervisely_project_is_labelled_with_vqa_settings_and_uploaded_into_a_new_project(
    ray_address, served, tmp_path, tiny_checkpoint
):
    images = IMAGES[:10]
    api = cases.fake_project(images, with_bad=True)
    job = _job("project:1", tmp_path / "out", tiny_checkpoint, upload="create", api_factory=api, actors=1, settings=VQA)
    summary = run_job(job, progress=lambda m: None)
    assert (summary["done"], summary["failed"], summary["upload"]["uploaded"]) == (10, 2, 10)
    reasons = {f["image"]: f["reason"] for f in json.loads("[" + ",".join(
        Path(summary["failures_file"]).read_text().splitlines()) + "]")}  # fmt: skip
    assert "path separator" in reasons["field/../escape.png"] and "could not be read" in reasons["field/truncated.png"]
    target = summary["upload"]["project_id"]
    uploaded = {api.images[i]["name"]: ann for i, ann in api.annotations.items()}
    written = cases.written_annotations(tmp_path / "out")
    assert {name: written[name] for name in uploaded} == cases.server_annotations(served[1], images, VQA)
    assert all([t["name"] for t in json.loads(written[name])["tags"]] == ["answer"] for name in uploaded)
    assert len(uploaded) == 10 and not list((tmp_path / "out").glob("**/img"))
    assert all(api.datasets[api.images[i]["dataset"]]["project"] == target for i in api.annotations)
