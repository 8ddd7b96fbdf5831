"""Videos on the real server, as users call it: ``ModelAPI.predict(input="clip.mp4")`` (the
upload route), ``Session.inference_video_id_async`` (Apply NN to Videos) and
``ModelAPI.predict(video_id=...)`` against the stand-in Supervisely API, tracking, stride,
stop, and videos that cannot be served."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests
import supervisely as sly
from supervisely.nn.model.model_api import ModelAPI

from tests.conftest import LIVE_SERVER_TMP
from tests.support.videos import moving_square_video, square_at

WIDTH, HEIGHT, FRAMES = 160, 120, 12
VIDEO_ID = 700
BIN = WIDTH / 32  # one location bin of the 32 x 32 grid, in pixels across


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return moving_square_video(tmp_path_factory.mktemp("videos") / "moving_square.mp4", FRAMES, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def video_id(stand_in_api, clip) -> int:
    stand_in_api.add_video(VIDEO_ID, "moving_square.mp4", clip.read_bytes(), FRAMES, WIDTH, HEIGHT)
    return VIDEO_ID


def _video_files_left(server: str) -> list:
    return [path for folder in LIVE_SERVER_TMP[server].glob("kosmos2-videos-*") for path in folder.iterdir()]


def _assert_follows_the_square(frame_index: int, box_tlbr) -> None:
    """The box's centre lies within three location bins of the centre of the square drawn on
    that frame (the tiny model's boxes are that precise; the square moves 6 px a frame)."""
    left, top, right, bottom = square_at(frame_index, WIDTH)
    centre = ((box_tlbr[1] + box_tlbr[3]) / 2, (box_tlbr[0] + box_tlbr[2]) / 2)
    true_centre = ((left + right) / 2, (top + bottom) / 2)
    assert all(abs(a - b) <= 3 * BIN for a, b in zip(centre, true_centre)), (frame_index, box_tlbr, true_centre)


def test_model_api_tracks_the_square_of_an_uploaded_clip_with_one_id(live_server, clip):
    predictions = list(ModelAPI(url=live_server).predict(input=str(clip), classes=["square"], tracking=True))
    assert [p.frame_index for p in predictions] == list(range(FRAMES))
    track_ids = set()
    for prediction in predictions:
        assert list(prediction.classes) == ["square"], prediction.frame_index
        track_ids.update(prediction.track_ids.tolist())
        _assert_follows_the_square(prediction.frame_index, prediction.boxes[0])
    assert track_ids == {1}, "the square is one object across the clip"
    assert _video_files_left(live_server) == [], "the upload is deleted when its request ends"


def _square_iou(frame_index: int, label: sly.Label) -> float:
    """IoU of a Bitmap label with the square drawn on that frame."""
    left, top, right, bottom = square_at(frame_index, WIDTH)
    truth = np.zeros((HEIGHT, WIDTH), bool)
    truth[top : bottom + 1, left : right + 1] = True
    mask = label.geometry.get_mask((HEIGHT, WIDTH))
    return float((mask & truth).sum() / (mask | truth).sum())


def test_masks_follow_the_tracked_square_on_every_frame_with_one_id(live_server, clip, stand_in_api, video_id):
    """``masks: true`` on a tracked video with a stride of 2: every frame has the square as a
    Bitmap (IoU >= 0.85 with the square drawn there) under one track id: SAM 2's mask of the box
    on the frames Kosmos-2 ran on, SAM 2's video memory on the frames between. The Apply NN to
    Videos path's video annotation holds one object with a bitmap on each frame."""
    predictions = list(
        ModelAPI(url=live_server).predict(input=str(clip), classes=["square"], tracking=True, masks=True, stride=2)
    )
    assert [p.frame_index for p in predictions] == list(range(FRAMES))
    for prediction in predictions:
        [label] = prediction.annotation.labels
        assert (label.obj_class.name, label.geometry.geometry_name()) == ("square", "bitmap")
        assert _square_iou(prediction.frame_index, label) >= 0.85, prediction.frame_index
    assert {int(t) for p in predictions for t in p.track_ids} == {1}
    key_frames_only = ModelAPI(url=live_server).predict(
        input=str(clip), classes=["square"], masks=True, stride=3, propagate_masks=False
    )
    assert [p.frame_index for p in key_frames_only] == list(range(0, FRAMES, 3))

    api = sly.Api(stand_in_api.url, "token-for-the-stand-in", ignore_task_id=True)
    settings = {"classes": ["square"], "masks": True}
    session = sly.nn.inference.Session(api, session_url=live_server, inference_settings=settings)
    assert len(list(session.inference_video_id_async(video_id, tracker="botsort"))) == FRAMES
    video_ann = session.inference_result["video_ann"]
    [video_object] = video_ann["objects"]
    figures = [figure for frame in video_ann["frames"] for figure in frame["figures"]]
    assert len(figures) == FRAMES and {f["geometryType"] for f in figures} == {"bitmap"}
    assert {f["objectKey"] for f in figures} == {video_object["key"]}


def test_stride_and_start_pick_the_frames_asked_for(live_server, clip):
    predictions = list(ModelAPI(url=live_server).predict(input=str(clip), classes=["square"], start_frame=1, stride=3))
    assert [p.frame_index for p in predictions] == [1, 4, 7, 10]
    assert all(p.track_ids is None for p in predictions), "no tracker asked for"
    backward = list(
        ModelAPI(url=live_server).predict(
            input=str(clip), classes=["square"], start_frame=9, num_frames=4, direction="backward"
        )
    )
    assert [p.frame_index for p in backward] == [9, 8, 7, 6]
    for prediction in backward:  # each frame read is the frame named: the square where it was drawn
        _assert_follows_the_square(prediction.frame_index, prediction.boxes[0])


def test_apply_nn_to_videos_path_returns_a_video_annotation_with_one_object(live_server, stand_in_api, video_id):
    api = sly.Api(stand_in_api.url, "token-for-the-stand-in", ignore_task_id=True)
    session = sly.nn.inference.Session(api, session_url=live_server, inference_settings={"classes": ["square"]})
    frames = list(session.inference_video_id_async(video_id, tracker="botsort"))
    assert len(frames) == FRAMES
    video_ann = session.inference_result["video_ann"]
    assert len(video_ann["objects"]) == 1 and video_ann["objects"][0]["classTitle"] == "square"
    key = video_ann["objects"][0]["key"]
    figures = {frame["index"]: frame["figures"] for frame in video_ann["frames"]}
    assert sorted(figures) == list(range(FRAMES))
    assert all(len(f) == 1 and f[0]["objectKey"] == key for f in figures.values())
    meta = ModelAPI(url=live_server).get_model_meta()  # as the Predict App reads a tracked video's annotation
    annotation = sly.VideoAnnotation.from_json(video_ann, meta)
    assert annotation.frames_count == FRAMES and annotation.img_size == (HEIGHT, WIDTH)
    assert ("videos.download", str(video_id)) in stand_in_api.calls
    assert _video_files_left(live_server) == []


def test_session_waits_for_a_video_by_id_and_gets_frames_and_the_video_annotation(live_server, stand_in_api, video_id):
    api = sly.Api(stand_in_api.url, "token-for-the-stand-in", ignore_task_id=True)
    session = sly.nn.inference.Session(api, session_url=live_server, inference_settings={"classes": ["square"]})
    annotations = session.inference_video_id(video_id, start_frame_index=4, frames_count=3)
    assert [[label.obj_class.name for label in ann.labels] for ann in annotations] == [["square"]] * 3
    raw = sly.nn.inference.SessionJSON(api, session_url=live_server, inference_settings={"classes": ["square"]})
    result = raw.inference_video_id(video_id, start_frame_index=4, frames_count=3, tracker="botsort")
    assert [frame["frame_index"] for frame in result["ann"]] == [4, 5, 6]
    assert [frame["index"] for frame in result["video_ann"]["frames"]] == [4, 5, 6]


def test_a_video_by_id_that_is_not_a_video_fails_its_job_and_the_server_serves_on(live_server, stand_in_api):
    stand_in_api.add_video(701, "broken.mp4", b"\x00" * 4096, 12, WIDTH, HEIGHT)
    response = requests.post(
        f"{live_server}/inference_video_id_async",
        json={"state": {"video_id": 701, "settings": {"classes": ["square"]}}, "api_token": "token-for-the-stand-in"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    request_id = {"state": {"inference_request_uuid": response.json()["inference_request_uuid"]}}
    deadline = time.monotonic() + 60
    while not (progress := requests.post(f"{live_server}/get_inference_progress", json=request_id, timeout=10).json())[
        "finished"
    ]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "video_id: not a video this server can read" in json.dumps(progress["exception"])
    assert requests.post(f"{live_server}/is_ready", timeout=5).status_code == 200
    assert _video_files_left(live_server) == []


def test_model_api_predicts_a_video_by_id_with_its_ids(live_server, video_id):
    predictions = list(ModelAPI(url=live_server).predict(video_id=video_id, classes=["square"], num_frames=3))
    assert [(p.frame_index, p.video_id) for p in predictions] == [(0, video_id), (1, video_id), (2, video_id)]


def test_stop_keeps_the_frames_done(live_server, tmp_path):
    frames = 400
    long_clip = moving_square_video(tmp_path / "long.mp4", frames, 64, 48)
    state = {"settings": {"classes": ["square"]}, "tracker": "botsort"}
    started = requests.post(
        f"{live_server}/inference_video_async",
        files={"files": ("long.mp4", long_clip.read_bytes(), "video/mp4")},
        data={"state": json.dumps(state)},
        timeout=30,
    ).json()
    request_id = {"state": {"inference_request_uuid": started["inference_request_uuid"]}}
    deadline = time.monotonic() + 60
    while not requests.post(f"{live_server}/get_inference_progress", json=request_id, timeout=10).json()["progress"][
        "current"
    ]:  # stopped once the first frames are done
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert requests.post(f"{live_server}/stop_inference", json=request_id, timeout=10).status_code == 200
    while not requests.post(f"{live_server}/get_inference_progress", json=request_id, timeout=10).json()["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    done = requests.post(f"{live_server}/pop_inference_results", json=request_id, timeout=10).json()["pending_results"]
    assert 1 <= len(done) < frames, len(done)
    assert [result["frame_index"] for result in done] == list(range(len(done)))
    video_ann = requests.post(f"{live_server}/get_inference_result", json=request_id, timeout=10).json()["video_ann"]
    assert [frame["index"] for frame in video_ann["frames"]] == list(range(len(done))), "the frames done, tracked"


@pytest.mark.parametrize(
    ("video", "state", "code", "message"),
    [
        (b"", {}, 400, "files: the video is empty"),
        (b"\x89PNG\r\n\x1a\n" + b"0" * 64, {}, 400, "files: this is a PNG image, not a video"),
        (b"not a video at all" * 100, {}, 400, "files: not a video this server can read"),
        (None, {"start_frame": 99}, 400, "start_frame: 99 is outside the video"),
        (None, {"stride": 0}, 400, "stride: expected an integer of at least 1"),
        (None, {"direction": "sideways"}, 400, "direction: expected 'forward' or 'backward'"),
        (None, {"tracker": "deepsort"}, 400, "tracker: expected one of ['botsort']"),
        (None, {"tracker": "botsort", "tracker_settings": {"reid_weights": "/etc/passwd"}}, 400,
         "tracker_settings.reid_weights: not a setting a request may change"),
        (None, {"tracker": "botsort", "tracker_settings": {"cmc_method": "file"}}, 400,
         "tracker_settings.cmc_method: not a setting"),
        (None, {"tracker": "botsort", "settings": {"task": "vqa", "question": "what?"}}, 400,
         "tracker: tracks need class names"),
        (None, {"num_frames": 2, "end_frame": 5}, 400, "end_frame: send one of num_frames, end_frame and duration"),
        (None, {"stride": 2, "settings": {"masks": True, "propagate_masks": "yes"}}, 400,
         "Invalid setting 'propagate_masks': expected true or false"),
        (None, {"settings": {"masks": "yes"}}, 400, "Invalid setting 'masks': expected true or false"),
    ],
)  # fmt: skip
def test_a_video_that_cannot_be_served_is_a_4xx_naming_the_field(live_server, clip, video, state, code, message):
    data = clip.read_bytes() if video is None else video
    response = requests.post(
        f"{live_server}/inference_video_async",
        files={"files": ("../../etc/clip.mp4", data, "video/mp4")},
        data={"state": json.dumps(state)},
        timeout=30,
    )
    assert response.status_code == code, response.text
    assert message in response.json()["message"]
    assert _video_files_left(live_server) == []
    assert requests.post(f"{live_server}/is_ready", timeout=5).status_code == 200


def test_a_video_id_the_api_does_not_have_is_a_404(live_server, stand_in_api):
    response = requests.post(
        f"{live_server}/inference_video_id_async",
        json={"state": {"video_id": 999_999}, "api_token": "token-for-the-stand-in"},
        timeout=30,
    )
    assert response.status_code == 404, response.text
    assert "video_id" in response.json()["message"]


def test_the_session_claims_videos_and_tracking(live_server):
    info = requests.post(f"{live_server}/get_session_info", json={}, timeout=10).json()
    assert info["videos_support"] and info["async_video_inference_support"] and info["tracking_on_videos_support"]
    settings = requests.post(f"{live_server}/get_tracking_settings", json={}, timeout=10).json()
    assert settings["botsort"]["track_high_thresh"] == 0.0 and "reid_weights" not in settings["botsort"]
