"""The Supervisely adapter through the SDK's FastAPI app (TestClient), on the tiny model."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import supervisely as sly
import torch
from PIL import Image

from kosmos2_app import Kosmos2
from tests.support.app_harness import (
    app_environment,
    client_for,
    deploy_on_cpu,
    infer_image,
    label_tlbr,
    png_bytes,
    rectangles,
)
from tests.support.compilers import miscompiling_compile
from tests.support.helpers import SCENE_CASES, scene, tlbr_iou


def test_ready_and_deploy_info_after_deploy(served, tiny_checkpoint):
    _, client = served
    assert client.get("/is_ready").status_code == 200
    response = client.post("/get_deploy_info", json={})
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["device"] == "cpu" and info["model_name"] == "Kosmos-2"
    assert info["task_type"] == "prompt-based object detection" and info["model_precision"] == "FP32"
    assert info["checkpoint_url"] == tiny_checkpoint and info["checkpoint_name"] == "checkpoint"  # KOSMOS2_CHECKPOINT


def test_session_info_claims_only_what_works(served):
    _, client = served
    info = client.post("/get_session_info", json={}).json()
    assert info["batch_inference_support"] is True
    assert info["videos_support"] is True and info["tracking_on_videos_support"] is True
    assert info["async_video_inference_support"] is True and info["device"] == "cpu"
    assert info["tracking_algorithms"] == ["botsort"] and info["sliding_window_support"] in (False, "none", None)


def test_sam2_loads_on_the_first_mask_request_or_at_deploy_when_asked(served, tmp_path, tiny_checkpoint):
    """By default SAM 2 waits for a request that asks for masks; with ``KOSMOS2_SAM2_AT_DEPLOY=1``
    it is loaded and warm when the deploy answers, and one that cannot load fails the deploy
    with a 503 naming ``KOSMOS2_SAM2``."""
    _, client = served
    info = client.post("/get_session_info", json={}).json()
    assert info["sam2"].endswith("tiny_sam2/checkpoint") and isinstance(info["sam2_loaded"], bool)
    with app_environment(tmp_path / "at-deploy", tiny_checkpoint) as patch:
        patch.setenv("KOSMOS2_SAM2_AT_DEPLOY", "1")
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        at_deploy = client_for(model)
        assert not model.segmenter.loaded
        assert deploy_on_cpu(at_deploy).status_code == 200
        assert at_deploy.post("/get_session_info", json={}).json()["sam2_loaded"] is True
    with app_environment(tmp_path / "broken", tiny_checkpoint) as patch:
        patch.setenv("KOSMOS2_SAM2_AT_DEPLOY", "1")
        patch.setenv("KOSMOS2_SAM2", str(tmp_path / "no-sam2-here"))
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        response = deploy_on_cpu(client_for(model))
        assert response.status_code == 503 and "KOSMOS2_SAM2" in response.text, response.text


def test_without_kosmos2_sam2_a_deploy_takes_its_model_rows_sam2(tmp_path, tiny_checkpoint):
    """The Serve button's deploy of the PyTorch row on CPU takes the row's ``meta.sam2.cpu``
    (Hiera tiny in the table; here the row is changed to choose large, which the default is
    not); with its weights in no cache here, a mask request is a 503 that says what to set, and
    the server goes on serving boxes."""
    with app_environment(tmp_path, tiny_checkpoint) as patch:
        patch.delenv("KOSMOS2_SAM2")
        patch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        assert model.pretrained_models[0]["meta"]["sam2"]["cpu"] == "facebook/sam2.1-hiera-tiny"
        model.pretrained_models[0]["meta"]["sam2"]["cpu"] = "facebook/sam2.1-hiera-large"
        client = client_for(model)
        assert deploy_on_cpu(client).status_code == 200
        info = client.post("/get_session_info", json={}).json()
        assert (info["sam2"], info["sam2_loaded"]) == ("facebook/sam2.1-hiera-large", False)
        image = scene(*SCENE_CASES[0])[0]
        masked = infer_image(client, image, masks=True)
        assert masked.status_code == 503 and "KOSMOS2_SAM2" in masked.text, masked.text
        assert len(rectangles(infer_image(client, image).json()["annotation"])) == 1


def test_how_the_engine_decodes_is_in_the_session_info_and_the_metrics(served, tmp_path, tiny_checkpoint):
    """Eager on CPU, said as such; with compiling asked for (``KOSMOS2_COMPILE=1``) and a
    compiler that miscompiles the decode step, the warm-up canary catches it: the server
    deploys, decodes eagerly, and says why in ``/get_session_info`` and ``/metrics``."""
    _, client = served
    info = client.post("/get_session_info", json={}).json()
    assert (info["decoder"], info["decoder_fallback"]) == ("eager", None)
    assert 'kosmos2_decoder_info{fallback="none",mode="eager"} 1.0' in client.get("/metrics").text

    with app_environment(tmp_path, tiny_checkpoint) as patch:
        patch.setenv("KOSMOS2_COMPILE", "1")
        patch.setattr(torch, "compile", miscompiling_compile(every=5))
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        miscompiled = client_for(model)
        assert deploy_on_cpu(miscompiled).status_code == 200
        info = miscompiled.post("/get_session_info", json={}).json()
        assert info["decoder"] == "eager" and "on the warm-up canary" in info["decoder_fallback"]
        metrics = miscompiled.get("/metrics").text
        assert 'kosmos2_decoder_info{fallback="canary_mismatch",mode="eager"} 1.0' in metrics
        image, drawn = scene(*SCENE_CASES[0])
        [rect] = rectangles(infer_image(miscompiled, image).json()["annotation"])
        assert [rect] == rectangles(infer_image(client, image).json()["annotation"])  # eager's answer


@pytest.mark.parametrize("seed,width,height,colour,shape", SCENE_CASES)
def test_inference_image_gives_a_rectangle_over_the_shape(served, seed, width, height, colour, shape):
    _, client = served
    image, drawn = scene(seed, width, height, colour, shape)
    response = infer_image(client, image)
    assert response.status_code == 200, response.text
    annotation = response.json()["annotation"]
    assert annotation["size"] == {"height": height, "width": width}
    [rect] = rectangles(annotation)
    assert rect["class"] == drawn.phrase and rect["geometry"] == "rectangle"
    assert tlbr_iou(rect["tlbr"], drawn) >= 0.5
    assert len(rect["confidence"]) == 1 and 0 < rect["confidence"][0] <= 1


def test_max_new_tokens_is_honoured_on_the_batch_path(served):
    _, client = served
    image = scene(*SCENE_CASES[0])[0]
    files = [("files", (f"img{i}.png", png_bytes(image), "image/png")) for i in range(2)]
    for tokens, expected in ((3, 0), (40, 1)):
        response = client.post(
            "/inference_batch", files=files, data={"settings": f'{{"settings": {{"max_new_tokens": {tokens}}}}}'}
        )
        assert response.status_code == 200, response.text
        assert [len(r["annotation"]["objects"]) for r in response.json()] == [expected, expected]


def test_confidence_threshold_and_classes_whitelist(served):
    """With a task other than the caption, ``classes`` only keeps the labels of those classes
    (with the caption it finds them: tests/integration/test_platform_apps.py)."""
    _, client = served
    image, drawn = scene(*SCENE_CASES[1])
    assert rectangles(infer_image(client, image, confidence_threshold=1.0).json()["annotation"]) == []
    caption = {"task": "custom", "prompt": "An image of"}
    assert rectangles(infer_image(client, image, **caption, classes=["a green circle"]).json()["annotation"]) == []
    kept = rectangles(infer_image(client, image, **caption, classes=[drawn.phrase]).json()["annotation"])
    assert [r["class"] for r in kept] == [drawn.phrase]


@pytest.mark.parametrize(
    "settings,field",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"confidence_threshold": 2}, "confidence_threshold"),
        ({"task": "custom", "prompt": ""}, "prompt"),
        ({"masks": "yes"}, "'masks'"),
        ({"masks": True, "keep_boxes": 1}, "'keep_boxes'"),
    ],
)
def test_bad_settings_get_400_naming_the_field_and_the_server_keeps_serving(served, settings, field):
    _, client = served
    image = scene(*SCENE_CASES[0])[0]
    response = infer_image(client, image, **settings)
    assert response.status_code == 400 and field in response.json()["message"]
    assert infer_image(client, image).status_code == 200


def test_load_model_again_reuses_the_weights_and_answers_the_same(served):
    model, client = served
    image = scene(*SCENE_CASES[2])[0]
    before = infer_image(client, image).json()["annotation"]
    engine = model._engine
    model.load_model(**model._deploy_params)  # what the SDK's idle freeze and unfreeze do
    assert model._engine is engine
    assert infer_image(client, image).json()["annotation"] == before


def test_classes_are_created_on_the_fly_thread_safely(served):
    model, _ = served
    names = [f"thing {i % 37}" for i in range(400)]
    errors = []

    def create(chunk):
        try:
            for name in chunk:
                model.make_annotation(np.zeros((8, 8, 3), np.uint8), [sly.nn.PredictionBBox(name, [1, 2, 3, 4], 0.5)])
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=create, args=(names[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    created = {c.name for c in model.model_meta.obj_classes if c.name.startswith("thing ")}
    assert created == set(names)


def test_concurrent_http_requests_share_model_passes_and_get_their_own_answers(served):
    """Six single-image requests at once (as labeling tools send them) and one bad one: the good
    ones share joint runs and answer as alone; the bad one gets its 400."""
    model, client = served
    images = [scene(*case)[0] for case in SCENE_CASES] + [scene(*SCENE_CASES[0])[0]]
    alone = [infer_image(client, image).json() for image in images]
    joint_before, model._batcher.max_wait_s = model._batcher.joint_runs, 0.5
    start, answers = threading.Barrier(len(images) + 1), {}

    def send(index, image, **settings):
        start.wait()
        answers[index] = infer_image(client, image, **settings)

    threads = [threading.Thread(target=send, args=(i, image)) for i, image in enumerate(images)]
    threads.append(threading.Thread(target=send, args=("bad", images[0]), kwargs={"max_new_tokens": 0}))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        model._batcher.max_wait_s = 0.01
    assert answers.pop("bad").status_code == 400
    assert [answers[i].json()["annotation"]["objects"] for i in range(len(images))] == [
        answer["annotation"]["objects"] for answer in alone
    ]
    assert model._batcher.joint_runs > joint_before


@pytest.mark.parametrize("height,width", [(1, 1), (1, 4000), (3000, 1), (2, 3)])
def test_degenerate_image_sizes_get_boxes_inside_the_image(served, height, width):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : max(1, width // 2)] = (0, 0, 255)
    response = infer_image(served[1], image, task="phrase_grounding", phrases="blue square. circle")
    assert response.status_code == 200, response.text
    boxes = rectangles(response.json()["annotation"])
    assert boxes  # the tiny model boxes both phrases on each of these
    assert response.json()["annotation"]["size"] == {"height": height, "width": width}
    for box in boxes:
        top, left, bottom, right = box["tlbr"]
        assert 0 <= top <= bottom < height and 0 <= left <= right < width


def test_headless_app_deploys_and_infers_without_a_gui(tmp_path, tiny_checkpoint):
    with app_environment(tmp_path, tiny_checkpoint):
        model = Kosmos2(use_gui=False, sliding_window_mode="none")
        assert model.gui is None
        row = model.pretrained_models[0]
        model._load_model_headless(
            model_files=dict(row["meta"]["model_files"]),
            model_info=row,
            model_source="Pretrained models",
            device="cpu",
            runtime="PyTorch",
        )
        image, drawn = scene(*SCENE_CASES[4])
        annotation = model.inference(image)
        [label] = annotation.labels
        assert label.obj_class.name == drawn.phrase
        assert tlbr_iou(label_tlbr(label), drawn) >= 0.5


def test_missing_weights_fail_deploy_with_what_to_set_and_a_later_deploy_works(tmp_path, tiny_checkpoint):
    with app_environment(tmp_path, str(tmp_path / "no-weights-here")) as environment:
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        failed = deploy_on_cpu(client)
        assert failed.status_code == 503 and "KOSMOS2_CHECKPOINT" in failed.json()["message"]
        assert client.get("/is_alive").status_code == 200
        assert client.get("/is_ready").status_code == 503
        environment.setenv("KOSMOS2_CHECKPOINT", tiny_checkpoint)
        assert deploy_on_cpu(client).status_code == 200
        assert client.get("/is_ready").status_code == 200


def _png(mode: str, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **save)
    return buffer.getvalue()


def _noise(size=(40, 30)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


UNREADABLE = {
    "empty": b"",
    "random bytes": bytes(range(256)) * 4,
    "text": b"hello, world\n",
    "truncated PNG": _png("RGB")[:60],
    "truncated JPEG": _encoded(_noise((200, 150)), format="JPEG")[:400],
}


@pytest.mark.parametrize("route", ["/inference_image", "/inference_batch"])
@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_images_get_400_and_the_next_request_succeeds(served, route, name):
    _, client = served
    files = [("files", ("upload.png", UNREADABLE[name], "image/png"))]
    response = client.post(route, files=files, data={"settings": '{"settings": {}}'})
    assert response.status_code == 400, response.text
    assert "could not be read" in response.json()["message"]
    assert infer_image(client, scene(*SCENE_CASES[0])[0]).status_code == 200


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1"])
def test_valid_png_modes_are_served(served, mode):
    _, client = served
    response = client.post(
        "/inference_image", files=[("files", ("m.png", _png(mode), "image/png"))], data={"settings": '{"settings": {}}'}
    )
    assert response.status_code == 200, response.text
    assert response.json()["annotation"]["size"] == {"height": 30, "width": 40}


def test_a_transparent_image_is_composited_onto_white_as_transformers_does(served):
    """Pixels under full transparency are not shown, so the model must not see them: the
    upload is served as transformers' convert_to_rgb composites it (onto white)."""
    from transformers.image_transforms import convert_to_rgb

    _, client = served
    image = scene(*SCENE_CASES[1])[0]
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    rgba[:, : image.shape[1] // 2, 3] = 0  # the left half is transparent
    composited = convert_to_rgb(rgba, return_numpy=True)
    transparent = infer_image(client, rgba, max_new_tokens=24).json()["annotation"]
    shown = infer_image(client, composited, max_new_tokens=24).json()["annotation"]
    dropped_alpha = infer_image(client, image, max_new_tokens=24).json()["annotation"]
    assert transparent == shown and shown != dropped_alpha


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 30))
    image.info["transparency"] = 0
    return _encoded(image, format="PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "blue", "green")]
    return _encoded(frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=100)


VALID_FILES = {
    "palette with transparency.png": _palette_with_transparency(),
    "cmyk.jpg": _encoded(_noise().convert("CMYK"), format="JPEG"),
    "animated.gif": _animated_gif(),
    "strip 20000x300.png": _png("RGB", (20000, 300)),
}


@pytest.mark.parametrize("name", sorted(VALID_FILES))
def test_other_valid_files_are_served_at_their_size(served, name):
    _, client = served
    size = (300, 20000) if "20000" in name else (30, 40)
    response = client.post(
        "/inference_image",
        files=[("files", (name, VALID_FILES[name], "image/*"))],
        data={"settings": '{"settings": {}}'},
    )
    assert response.status_code == 200, response.text
    annotation = response.json()["annotation"]
    assert annotation["size"] == {"height": size[0], "width": size[1]}
    for rect in rectangles(annotation):
        top, left, bottom, right = rect["tlbr"]
        assert 0 <= top <= bottom < size[0] and 0 <= left <= right < size[1]


def test_an_exif_rotated_jpeg_is_boxed_as_it_is_shown(served):
    """The pixels are stored turned a quarter to the left, with EXIF orientation 6 (turn right
    to show): the boxes must be those of the image as shown, of that size."""
    _, client = served
    shown, drawn = scene(*SCENE_CASES[1])
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = _encoded(Image.fromarray(np.rot90(shown, 1).copy()), format="JPEG", quality=95, exif=exif)
    response = client.post(
        "/inference_image",
        files=[("files", ("photo.jpg", stored, "image/jpeg"))],
        data={"settings": '{"settings": {}}'},
    )
    assert response.status_code == 200, response.text
    annotation = response.json()["annotation"]
    assert annotation["size"] == {"height": shown.shape[0], "width": shown.shape[1]}
    [rect] = rectangles(annotation)
    assert tlbr_iou(rect["tlbr"], drawn) >= 0.5


@pytest.mark.parametrize(
    "raw,field",
    [
        (b'{"settings": {"task": "vqa", "question": "\\ud800 why?"}}', "question"),
        (b'{"settings": {"max_new_token": 8}}', "max_new_token"),
    ],
)
def test_broken_text_and_misspelt_keys_get_400_naming_the_field(served, raw, field):
    _, client = served
    response = client.post(
        "/inference_image",
        data={"settings": raw},
        files=[("files", ("a.png", png_bytes(scene(*SCENE_CASES[0])[0]), "image/png"))],
    )
    assert response.status_code == 400, response.text
    assert f"'{field}'" in response.json()["message"]


@pytest.mark.parametrize("route", ["/visual_question_answering", "/get_session_info", "/inference_image_url"])
@pytest.mark.parametrize("body", [b'{"state": {"question": "\xff why"}}', b'{"state": '])
def test_a_json_body_that_is_not_utf8_json_is_a_400(served, route, body):
    _, client = served
    response = client.post(route, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not UTF-8 JSON" in response.json()["message"]
    assert client.post("/get_session_info", json={}).status_code == 200


def test_an_empty_body_with_a_json_content_type_is_no_body(served):
    _, client = served
    assert client.get("/is_ready", headers={"Content-Type": "application/json"}).status_code == 200
    assert client.post("/get_session_info", headers={"Content-Type": "application/json"}).status_code == 200


def test_long_inference_runs_in_chunks_of_the_batch_size(served, monkeypatch):
    """CLI predict on a folder hands the SDK every image at once: the app reads and infers them
    max_images at a time, so memory holds one chunk, and gets the same annotations."""
    model, client = served
    images = [scene(*SCENE_CASES[i % len(SCENE_CASES)])[0] for i in range(7)]
    expected, _ = model._inference_batched_wrapper(images, {"max_new_tokens": 16})
    seen = []
    submit = model._batcher.submit
    monkeypatch.setattr(model._batcher, "max_images", 3)
    monkeypatch.setattr(
        model._batcher, "submit", lambda batch, policy: seen.append(len(batch)) or submit(batch, policy)
    )
    anns, data = model._inference_batched_wrapper(images, {"max_new_tokens": 16})
    assert seen == [3, 3, 1] and [a.to_json() for a in anns] == [a.to_json() for a in expected]
    assert len(data) == 7 and all(item["task"] == "caption" for item in data)


def test_masks_are_not_propagated_with_an_image_only_sam2(served, tmp_path):
    """A deploy whose SAM 2 has no video memory (an image-only checkpoint): a video with masks and
    a stride is a 400 naming propagate_masks and the way out, before any work; with
    ``propagate_masks: false`` it runs on the key frames."""
    import json

    from transformers import Sam2Model

    from kosmos2_app.masks import LazySegmenter
    from tests.support.app_harness import TINY_SAM2
    from tests.support.videos import moving_square_video

    model, client = served
    Sam2Model.from_pretrained(str(TINY_SAM2)).save_pretrained(tmp_path / "image-only")
    clip = moving_square_video(tmp_path / "clip.mp4", frames=4).read_bytes()
    kept, model.segmenter = model.segmenter, LazySegmenter(str(tmp_path / "image-only"))
    try:
        state = {"stride": 2, "settings": {"classes": ["square"], "masks": True}}
        sent = {"files": ("clip.mp4", clip, "video/mp4")}
        refused = client.post("/inference_video_async", files=sent, data={"state": json.dumps(state)})
        assert refused.status_code == 400, refused.text
        message = refused.json()["message"]
        assert "propagate_masks: SAM 2" in message and "is an image model" in message
        state["settings"]["propagate_masks"] = False
        accepted = client.post("/inference_video_async", files=sent, data={"state": json.dumps(state)})
        assert accepted.status_code == 200, accepted.text
        request = {"state": {"inference_request_uuid": accepted.json()["inference_request_uuid"]}}
        while not client.post("/get_inference_progress", json=request).json()["finished"]:
            threading.Event().wait(0.1)
        results = client.post("/pop_inference_results", json=request).json()["pending_results"]
        assert [result["frame_index"] for result in results] == [0, 2]
    finally:
        model.segmenter = kept
