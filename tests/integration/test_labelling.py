"""The labelling job's parts without Ray: sources, the output's exactly-once writes, the
resource plan, the command's arguments, the stages run in-process, and the upload modes
against a stand-in Supervisely."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import supervisely as sly

from kosmos2_app.results.annotations import AnnotationBuilder
from kosmos2_jobs.labelling import cli
from kosmos2_jobs.labelling.interrupts import InterruptWatch
from kosmos2_jobs.labelling.job import LabelJob
from kosmos2_jobs.labelling.plan import plan_resources
from kosmos2_jobs.labelling.stages import EngineSpec, LabelImages, read_images
from supervisely_io.output import TEMP_SUFFIX, ProjectOutput
from supervisely_io.sources import Item, local_items, remote_items
from supervisely_io.upload import SUFFIX, merged_meta, upload_project
from tests.support.app_harness import png_bytes
from tests.support.helpers import canonical
from tests.support.labelling_cases import (
    BAD_FILES,
    fake_project,
    generated_images,
    server_annotations,
    write_folder,
    write_project_folder,
)

IMAGES = generated_images(6)


def test_a_folder_becomes_datasets_named_after_it_and_its_subfolders(tmp_path):
    root = write_folder(tmp_path / "photos", IMAGES, bad=True)
    (root / ".hidden.png").write_bytes(b"x")
    (root / "readme.txt").write_text("not an image")
    items = local_items(root)
    assert {item.dataset for item in items} == {"photos", "photos/datasets/more"}
    assert sorted(item.name for item in items) == sorted([name for name, _ in IMAGES] + list(BAD_FILES))
    assert all(os.path.isabs(item.path) and item.problem is None for item in items)


def test_a_project_folder_keeps_its_datasets_and_nesting(tmp_path):
    root = write_project_folder(tmp_path / "project", IMAGES)
    items = local_items(root)
    assert {item.dataset for item in items} == {"outer", "outer/datasets/inner"}
    assert len(items) == len(IMAGES)


def test_remote_items_mirror_nested_datasets(tmp_path):
    api = fake_project(IMAGES)
    items = list(remote_items(api, project_id=1))
    assert {item.dataset for item in items} == {"field", "field/datasets/north"}
    assert {item.image_id for item in items} == {100 + i for i in range(len(IMAGES))}
    only_north = list(remote_items(api, dataset_id=12))
    assert {item.dataset for item in only_north} == {"north"} and len(only_north) == len(IMAGES) // 2


@pytest.mark.parametrize("name", ["../escape.png", "a/b.png", "..", ".hidden.png", "", "tab\tname.png", "x" * 300])
def test_hostile_names_are_problems_never_paths(name):
    assert Item("ds", name, image_id=1, dataset_id=1).problem
    assert Item(name or "..", "ok.png", image_id=1, dataset_id=1).problem


def test_an_annotation_is_published_once_and_whole(tmp_path):
    output = ProjectOutput(tmp_path)
    item = Item("ds", "a.png")
    assert not output.is_done(item)
    assert output.write_annotation(item, {"first": 1}) is True
    assert output.write_annotation(item, {"second": 2}) is False  # a retried batch writes nothing
    assert output.read_annotation(item) == {"first": 1} and output.is_done(item)
    leftover = output.annotation_path(item).parent / f".b.png.json.123{TEMP_SUFFIX}"
    leftover.write_text("{half")
    assert output.sweep_temporaries() == 1 and not leftover.exists()
    assert sorted(p.name for p in output.annotation_path(item).parent.iterdir()) == ["a.png.json"]


def test_images_are_linked_or_written_once(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"image bytes")
    output = ProjectOutput(tmp_path / "out")
    local, remote = Item("ds", "in.png", str(source)), Item("ds", "r.png", image_id=4, dataset_id=1)
    assert output.write_image(local) and output.write_image(remote, b"downloaded")
    assert not output.write_image(remote, b"other")
    assert output.image_path(local).read_bytes() == b"image bytes"
    assert output.image_path(remote).read_bytes() == b"downloaded"


@pytest.mark.parametrize(
    ("cluster", "device", "actors", "expected"),
    [
        ({"CPU": 2}, None, None, ("cpu", 1, 1.0, 0.0, 1, 1)),
        ({"CPU": 2}, None, 2, ("cpu", 2, 0.5, 0.0, 1, 1)),
        ({"CPU": 32}, None, None, ("cpu", 4, 1.0, 0.0, 7, 4)),
        ({"CPU": 16, "GPU": 8}, None, None, ("cuda", 8, 1.0, 1.0, 1, 8)),
        ({"CPU": 16, "GPU": 8}, "cpu", 2, ("cpu", 2, 1.0, 0.0, 7, 2)),
        ({"CPU": 4, "GPU": 4}, None, None, ("cuda", 4, 0.5, 1.0, 1, 2)),
    ],
)
def test_the_resource_plan_leaves_cpus_for_reading(cluster, device, actors, expected):
    plan = plan_resources(cluster, device, actors)
    assert (plan.device, plan.actors, plan.actor_cpus, plan.actor_gpus, plan.threads, plan.read_tasks) == expected
    assert plan.actors * plan.actor_cpus + plan.read_cpus <= cluster["CPU"]  # reading can always start
    if plan.device == "cpu":
        assert plan.actors * plan.threads + plan.read_tasks <= max(cluster["CPU"], plan.actors + 1)


@pytest.mark.parametrize(
    ("cluster", "device", "actors", "message"),
    [
        ({"CPU": 2}, "cuda", None, "no GPUs"),
        ({"CPU": 8, "GPU": 2}, None, 3, "has 2 GPUs"),
        ({"CPU": 2}, "tpu", None, "'cpu' or 'cuda'"),
    ],  # fmt: skip
)
def test_a_plan_that_cannot_run_says_why(cluster, device, actors, message):
    with pytest.raises(ValueError, match=message):
        plan_resources(cluster, device, actors)


def test_bad_settings_stop_the_command_before_anything_runs(tmp_path, capsys, tiny_checkpoint):
    out = tmp_path / "out"
    argv = ["samples", "--out", str(out), "--checkpoint", tiny_checkpoint]
    assert cli.main([*argv, "--task", "vqa"]) == 2
    assert "question" in capsys.readouterr().err
    assert cli.main([*argv, "--settings", '{"task": "caption", "max_new_token": 5}']) == 2
    assert "max_new_tokens" in capsys.readouterr().err
    assert cli.main([*argv, "--settings", "[1, 2"]) == 2
    assert "neither JSON nor YAML" in capsys.readouterr().err
    assert cli.main([*argv, "--upload", "create"]) == 2
    assert "project:<id>" in capsys.readouterr().err
    assert cli.main([*argv, "--settings", '{"masks": "yes"}']) == 2
    assert "Invalid setting 'masks': expected true or false" in capsys.readouterr().err
    assert not out.exists()


def test_settings_come_from_text_or_a_file(tmp_path):
    path = tmp_path / "grounding.yaml"
    path.write_text("task: phrase_grounding\nphrases: [a red circle]\n")
    args = cli.parse_args(["in", "--out", "o", "--settings", str(path)])
    assert cli.settings_of(args) == {"task": "phrase_grounding", "phrases": ["a red circle"]}
    args = cli.parse_args(["in", "--out", "o", "--settings", '{"question": "What?"}', "--task", "vqa"])
    assert cli.settings_of(args) == {"question": "What?", "task": "vqa"}


def test_a_job_refuses_an_out_inside_its_source_or_around_it(tmp_path, tiny_checkpoint, capsys):
    source = tmp_path / "photos"
    source.mkdir()
    for out in (source, source / "labelled", tmp_path):  # the last one holds the source
        with pytest.raises(ValueError, match="must be apart, neither inside the other"):
            LabelJob(str(source), out, checkpoint=tiny_checkpoint)
    assert cli.main([str(source), "--out", str(tmp_path), "--checkpoint", tiny_checkpoint]) == 2
    assert "must be apart" in capsys.readouterr().err


def test_a_cluster_that_is_not_there_is_an_error_within_its_wait(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from kosmos2_jobs.labelling import job as job_module
    from tests.support.server_process import free_port

    source = write_folder(tmp_path / "in", IMAGES[:1])
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setattr(job_module, "CLUSTER_WAIT_S", 1.0)
    started = time.monotonic()
    assert cli.main([str(source), "--out", str(tmp_path / "out"), "--checkpoint", tiny_checkpoint]) == 2
    assert time.monotonic() - started < 10
    assert "did not answer within 1 s" in capsys.readouterr().err


def _read_batch(items: list[Item]) -> dict:
    return {name: np.array([getattr(item, name) for item in items], dtype=object)
            for name in ("dataset", "name", "path", "image_id", "dataset_id")}  # fmt: skip


def test_reading_records_why_an_image_is_bad_and_keeps_the_rest(tmp_path):
    root = write_folder(tmp_path / "in", IMAGES[:2], bad=True)
    big = tmp_path / "in" / "big.png"
    big.write_bytes(png_bytes(np.zeros((200, 200, 3), np.uint8)))
    output = ProjectOutput(tmp_path / "out")
    items = local_items(root)
    read = read_images(_read_batch(items), output, max_pixels=30_000, max_bytes=1 << 20)
    errors = dict(zip((item.name for item in items), read["error"]))
    assert errors[IMAGES[0][0]] == "" and read["pixels"][[i.name for i in items].index(IMAGES[0][0])].ndim == 3
    assert "could not be read" in errors["truncated.png"] and "could not be read" in errors["notes.jpg"]
    assert "more than 30000 pixels" in errors["big.png"]
    assert sorted(p.name for p in (tmp_path / "out").glob("**/img/*")) == sorted(name for name, _ in IMAGES[:2])


def test_reading_a_remote_batch_downloads_per_dataset(tmp_path):
    api = fake_project(IMAGES)
    items = list(remote_items(api, project_id=1))
    read = read_images(_read_batch(items), ProjectOutput(tmp_path, keep_images=False), 10**8, 1 << 20, api)
    assert list(read["error"]) == [""] * len(items)
    assert not list(tmp_path.glob("**/img/*"))  # annotations only, for an upload


def test_the_labelling_stage_writes_what_the_server_returns(tmp_path, tiny_checkpoint, served):
    _, client = served
    settings = {"task": "phrase_grounding", "phrases": ["a red circle", "a blue square"]}
    output = ProjectOutput(tmp_path)
    stage = LabelImages(EngineSpec(tiny_checkpoint, "pytorch", "cpu", 1, 4), settings, output,
                        str(tmp_path / "classes.jsonl"))  # fmt: skip
    items = [Item("ds", name) for name, _ in IMAGES]
    batch = {**_read_batch(items), "pixels": [image for _, image in IMAGES], "error": np.array([""] * len(IMAGES))}
    batch["error"][2] = "could not be read"
    rows = stage(batch)
    assert rows["outcome"] == ["done", "done", "failed", "done", "done", "done"]
    assert stage(batch)["outcome"] == ["found", "found", "failed", "found", "found", "found"]
    expected = server_annotations(client, IMAGES, settings)
    for item in items[:2] + items[3:]:
        assert canonical(output.read_annotation(item)) == expected[item.name], item.name
    logged = {json.loads(line) for line in (tmp_path / "classes.jsonl").read_text().splitlines()}
    used = {o["classTitle"] for item in items if output.is_done(item) for o in output.read_annotation(item)["objects"]}
    assert logged == used and used <= set(settings["phrases"])


def _labelled_output(tmp_path, api) -> tuple[ProjectOutput, list[Item]]:
    """An output with an annotation per remote image (a box "a red circle", a caption), as a job
    would leave it, without running the model."""
    output = ProjectOutput(tmp_path, keep_images=False)
    builder = AnnotationBuilder()
    items = list(remote_items(api, project_id=1))
    for item in items:
        box = sly.nn.PredictionBBox("a red circle", [1, 2, 10, 20], 0.75)
        ann = builder.annotation(48, 64, [box])
        output.write_annotation(item, ann.to_json())
    output.write_meta(builder.meta)
    return output, items


def _job(api, upload: str, tmp_path, tiny_checkpoint) -> LabelJob:
    return LabelJob("project:1", tmp_path, checkpoint=tiny_checkpoint, upload=upload, api_factory=api)


def test_upload_create_mirrors_the_datasets_copies_images_by_id_and_resumes(tmp_path, tiny_checkpoint):
    api = fake_project(IMAGES)
    output, items = _labelled_output(tmp_path, api)
    first = upload_project(_job(api, "create", tmp_path, tiny_checkpoint), output, items[:4], lambda m: None)
    target = first["project_id"]
    assert api.projects[target]["name"] == f"fields{SUFFIX}" and first["uploaded"] == 4
    created = {i: row for i, row in api.datasets.items() if row["project"] == target}
    names = {row["name"]: row for row in created.values()}
    assert set(names) == {"field", "north"} and api.datasets[names["north"]["parent"]]["name"] == "field"
    again = upload_project(_job(api, "create", tmp_path, tiny_checkpoint), output, items, lambda m: None)
    assert again == {"mode": "create", "project_id": target, "uploaded": len(items) - 4, "total_uploaded": len(items)}
    copies = [i for i, row in api.images.items() if row["dataset"] in created]
    assert len(copies) == len(items)  # nothing uploaded twice
    for image_id in copies:
        source = next(i for i in items if i.name == api.images[image_id]["name"])
        assert api.images[image_id]["bytes"] == api.images[source.image_id]["bytes"]
        assert api.annotations[image_id] == output.read_annotation(source)
    meta = sly.ProjectMeta.from_json(api.projects[target]["meta"])
    assert meta.get_obj_class("a red circle") is not None and meta.get_tag_meta("confidence") is not None


def test_upload_append_keeps_the_existing_labels_and_renames_clashing_classes(tmp_path, tiny_checkpoint):
    clash = sly.ObjClass("a red circle", sly.Polygon)
    api = fake_project(IMAGES)
    api.projects[1]["meta"] = sly.ProjectMeta(obj_classes=[clash]).to_json()
    poly = sly.Polygon([sly.PointLocation(1, 1), sly.PointLocation(1, 9), sly.PointLocation(9, 9)])
    api.annotations[100] = sly.Annotation((48, 64), [sly.Label(poly, clash)]).to_json()
    output, items = _labelled_output(tmp_path, api)
    summary = upload_project(_job(api, "append", tmp_path, tiny_checkpoint), output, items, lambda m: None)
    assert summary["project_id"] == 1 and summary["uploaded"] == len(items)
    titles = [(o["classTitle"], o["geometryType"]) for o in api.annotations[100]["objects"]]
    assert titles == [("a red circle", "polygon"), (f"a red circle{SUFFIX}", "rectangle")]
    assert all(len(api.annotations[item.image_id]["objects"]) == 1 for item in items if item.image_id != 100)
    upload_project(_job(api, "append", tmp_path, tiny_checkpoint), output, items, lambda m: None)
    assert len(api.annotations[100]["objects"]) == 2  # a rerun appends nothing twice


def test_upload_replace_and_mode_changes(tmp_path, tiny_checkpoint):
    api = fake_project(IMAGES)
    api.annotations[100] = {"description": "", "size": {"height": 48, "width": 64}, "tags": [], "objects": []}
    output, items = _labelled_output(tmp_path, api)
    upload_project(_job(api, "replace", tmp_path, tiny_checkpoint), output, items, lambda m: None)
    assert api.annotations[100] == output.read_annotation(items[[i.image_id for i in items].index(100)])
    with pytest.raises(ValueError, match="mode 'replace'"):
        upload_project(_job(api, "append", tmp_path, tiny_checkpoint), output, items, lambda m: None)


def test_merged_meta_reuses_compatible_classes_and_tags():
    ours = AnnotationBuilder().meta.add_obj_class(sly.ObjClass("dog", sly.Rectangle))
    target = sly.ProjectMeta(
        obj_classes=[sly.ObjClass("dog", sly.Rectangle, [1, 2, 3])],
        tag_metas=[sly.TagMeta("confidence", sly.TagValueType.ANY_STRING)],
    )
    merged, classes, tags = merged_meta(target, ours)
    assert classes["dog"].color == [1, 2, 3]
    assert tags["confidence"].name == f"confidence{SUFFIX}" and tags["caption"].name == "caption"
    assert merged.get_tag_meta("confidence").value_type == sly.TagValueType.ANY_STRING


def test_a_ctrl_c_that_library_code_swallows_is_raised_at_the_next_check():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with InterruptWatch() as watch:
            watch.check()  # nothing yet
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler raises here
            except KeyboardInterrupt:
                pass  # swallowed, as a finaliser or a catch-all in a library would
            with pytest.raises(KeyboardInterrupt):
                watch.check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_handler_someone_else_set_is_left_alone():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    try:
        with InterruptWatch() as watch:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            watch.check()
        assert not watch.requested
    finally:
        signal.signal(signal.SIGINT, previous)


def test_without_ray_address_a_new_local_cluster_is_started_never_a_leftover_one(monkeypatch):
    """``ray.init()`` alone joins whatever ``/tmp/ray/ray_current_cluster`` names, and a cluster
    stopped uncleanly leaves that file behind: the job would wait for a cluster that is gone."""
    import ray

    from kosmos2_jobs.labelling import job as job_module
    from kosmos2_jobs.labelling.job import connect_ray

    asked = []
    monkeypatch.setattr(job_module, "check_cluster_reachable", lambda address, wait_s: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **options: asked.append(options["address"]))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connect_ray()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
    connect_ray()
    assert asked == ["local", "127.0.0.1:6390"]
