"""The video pieces alone: which frames a request asks for, the files refused, frames read as
asked, and each tracker's own track numbering."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import supervisely as sly

from kosmos2_app.video import VideoFile, VideoRefused, VideoStore, video_request
from kosmos2_app.video.files import VideoTooLarge, copy_capped
from kosmos2_app.video.frames import FrameReader, FrameSeeker
from kosmos2_app.video.tracking import FrameTracker, tracker_settings
from tests.support.videos import write_video


@pytest.mark.parametrize(
    ("state", "frames"),
    [
        ({}, list(range(10))),
        ({"stride": 3}, [0, 3, 6, 9]),
        ({"startFrameIndex": 2, "framesCount": 3}, [2, 3, 4]),
        ({"start_frame": 8, "num_frames": 5}, [8, 9]),  # cut at the end of the video
        ({"start_frame": 2, "end_frame": 4}, [2, 3, 4]),  # the end frame is included
        ({"start_frame": 5, "direction": "backward", "stride": 2}, [5, 3, 1]),
        ({"start_frame": 5, "framesDirection": "backward", "num_frames": 2}, [5, 4]),
        ({"duration": 0.5}, [0, 1, 2, 3, 4]),  # 10 frames a second
    ],
)
def test_a_request_runs_on_the_frames_it_asks_for(state, frames):
    assert video_request(state).frame_indices(10, 10.0, 100) == frames


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"start_frame": 10}, "start_frame: 10 is outside the video"),
        ({"start_frame": -1}, "start_frame: expected an integer of at least 0"),
        ({"stride": 1.5}, "stride: expected an integer"),
        ({"step": True}, "step: expected an integer"),
        ({"num_frames": 0}, "num_frames: expected an integer of at least 1"),
        ({"direction": "up"}, "direction: expected 'forward' or 'backward'"),
        ({"duration": "1s"}, "duration: expected a positive number of seconds"),
        ({"tracker": "sort"}, "tracker: expected one of ['botsort']"),
        ({"tracker_settings": []}, "tracker_settings: expected an object"),
        ({"num_frames": 3, "duration": 1}, "duration: send one of num_frames, end_frame and duration"),
        ({"stride": 1}, "num_frames: this request runs on 10 frames, more than the 9"),
    ],
)
def test_a_wrong_frame_range_names_the_field(state, message):
    with pytest.raises(VideoRefused, match=message.replace("[", r"\[").replace("]", r"\]")):
        video_request(state).frame_indices(10, 10.0, 9)


@pytest.mark.parametrize(
    ("state", "gaps"),
    [
        ({"stride": 3}, {0: [1, 2], 3: [4, 5], 6: [7, 8], 9: []}),
        ({"stride": 4, "num_frames": 6}, {0: [1, 2, 3], 4: [5]}),  # the last gap ends with the range
        ({"start_frame": 7, "stride": 3, "direction": "backward"}, {7: [6, 5], 4: [3, 2], 1: [0]}),
        ({"stride": 1}, {index: [] for index in range(10)}),
    ],
)
def test_each_frame_run_on_is_followed_by_the_frames_the_stride_skips(state, gaps):
    request = video_request(state)
    assert request.gaps(10, 10.0) == gaps
    assert list(gaps) == request.frame_indices(10, 10.0, 100)


def test_frames_masks_are_carried_through_count_towards_the_frame_limit():
    """Four frames run on, ten covered: within a limit of four without propagation, refused with
    it, naming propagate_masks and the way out."""
    request = video_request({"stride": 3})
    assert request.frame_indices(10, 10.0, 4) == [0, 3, 6, 9]
    refusal = "propagate_masks: .* covers 10 frames, more than the 4 .* propagate_masks: false"
    with pytest.raises(VideoRefused, match=refusal):
        dataclasses.replace(request, propagate=True).frame_indices(10, 10.0, 4)
    assert dataclasses.replace(request, propagate=True).frame_indices(10, 10.0, 10) == [0, 3, 6, 9]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"reid_weights": "/etc/passwd"}, "tracker_settings.reid_weights: not a setting a request may change"),
        ({"device": "cuda"}, "tracker_settings.device: not a setting"),
        ({"with_reid": True}, "tracker_settings.with_reid: not a setting"),
        ({"cmc_method": "file"}, "tracker_settings.cmc_method: not a setting"),
        ({"track_high_thresh": 2}, "tracker_settings.track_high_thresh: expected a number from 0 to 1"),
        ({"track_buffer": 0}, "tracker_settings.track_buffer: expected 1 to 1000 frames"),
    ],
)
def test_tracker_settings_a_request_may_not_change_are_refused(settings, message):
    with pytest.raises(VideoRefused, match=message):
        tracker_settings(settings, None)


def test_re_identification_runs_only_with_the_operators_weights():
    assert tracker_settings({"match_thresh": 0.5}, None)["with_reid"] is False
    chosen = tracker_settings({}, "/models/osnet.pth")
    assert chosen["with_reid"] is True and chosen["reid_weights"] == "/models/osnet.pth"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """30 frames of 96 x 64, each a plain grey of its own (20 + 7 x index): any frame tells its index."""
    frames = [np.full((64, 96, 3), 20 + 7 * index, np.uint8) for index in range(30)]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames), frames


@pytest.mark.parametrize(
    "batches",
    [[[0, 1, 2], [3, 4, 5]], [[0, 7, 14], [21, 28]], [[29, 25, 21], [17, 13]], [[3, 2, 1, 0]], [[10], [80, 0]]],
)
def test_frames_are_read_as_asked(clip, batches):
    """Each frame read is the frame of that index (the nearest of the frames written, after the codec)."""
    path, written = clip
    with FrameReader(str(path), batches, side=None, keep_whole=True) as reader:
        read = list(reader)
    wanted = [index for batch in batches for index in batch if index < 30]
    assert [index for batch in read for index in batch.indices] == wanted
    for batch in read:
        for index, frame in zip(batch.indices, batch.whole):
            errors = [np.abs(frame.astype(int) - other.astype(int)).mean() for other in written]
            assert int(np.argmin(errors)) == index, (index, errors[index])


def test_the_frames_a_stride_skips_are_read_as_asked(clip):
    """One seeker, gap after gap as a request reads them (forward, then backward, then past the
    end): each frame is the frame of its index, and the frames past the end are not there."""
    path, written = clip
    gaps = [[1, 2], [4, 5], [13, 12, 11], [28, 29, 30, 31]]
    with FrameSeeker(str(path)) as seeker:
        read = [list(seeker.frames(gap)) for gap in gaps]
    assert [[index for index, _ in gap] for gap in read] == [[1, 2], [4, 5], [13, 12, 11], [28, 29]]
    for index, frame in (pair for gap in read for pair in gap):
        errors = [np.abs(frame.astype(int) - other.astype(int)).mean() for other in written]
        assert int(np.argmin(errors)) == index, (index, errors[index])


def test_an_overstated_frame_count_ends_the_reading_early(clip):
    path, _ = clip
    with FrameReader(str(path), [[28, 29, 30, 31]], side=32, keep_whole=False) as reader:
        read = list(reader)
    assert [batch.indices for batch in read] == [[28, 29]] and reader.short
    assert read[0].views[0].size == (96, 64) and read[0].whole == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "files: the video is empty"),
        (b"\xff\xd8\xff\xe0" + b"0" * 100, "files: this is a JPEG image, not a video"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"0" * 100, "files: this is a WebP image"),
        (b"\x00" * 5000, "files: not a video this server can read"),
    ],
)
def test_what_is_not_a_video_is_refused(tmp_path, data, message):
    path = tmp_path / "upload"
    path.write_bytes(data)
    with pytest.raises(VideoRefused, match=message):
        VideoFile.open(path, 10**8)


def test_frames_over_the_pixel_limit_are_refused_before_decoding(clip):
    path, _ = clip
    assert VideoFile.open(path, 96 * 64).frames == 30
    with pytest.raises(VideoRefused, match="frames of 96 x 64 have more pixels than the 6143"):
        VideoFile.open(path, 96 * 64 - 1)


def test_a_video_over_the_size_cap_stops_being_written_at_the_cap(tmp_path):
    chunks = (b"x" * 1000 for _ in range(100))  # 100 kB, sent 1 kB at a time
    with pytest.raises(VideoTooLarge, match="video_id: the video is larger than the 0 MB"):
        copy_capped(chunks, tmp_path / "video", 4500, "video_id")
    assert (tmp_path / "video").stat().st_size <= 4500
    assert copy_capped(iter([b"ab", b"cd"]), tmp_path / "small", 4, "files") == 4


def test_a_store_file_is_private_and_gone_after_its_block(tmp_path):
    store = VideoStore(str(tmp_path))
    assert store.folder.stat().st_mode & 0o777 == 0o700
    with store.new_file() as path:
        path.write_bytes(b"video")
        assert path.parent == store.folder
    assert not path.exists()
    store.close()
    assert not store.folder.exists()


BOXES = ((10, 10, 30, 30), (60, 10, 80, 30), (110, 10, 130, 30))  # three still squares, (left, top, right, bottom)


def _squares(count: int) -> sly.Annotation:
    """A 160 x 120 frame's annotation with the first ``count`` of :data:`BOXES`."""
    square = sly.ObjClass("square", sly.Rectangle)
    confidence = sly.TagMeta("confidence", sly.TagValueType.ANY_NUMBER)
    labels = [
        sly.Label(sly.Rectangle(top, left, bottom, right), square, sly.TagCollection([sly.Tag(confidence, 0.2)]))
        for left, top, right, bottom in BOXES[:count]
    ]
    return sly.Annotation((120, 160), labels)


def test_each_tracker_numbers_its_own_tracks():
    """BoT-SORT numbers tracks from one counter of its class, which each new tracker resets: a
    request that starts while another tracks must not give the other's next track an id it has
    given already."""
    frame = np.full((120, 160, 3), 235, np.uint8)
    first = FrameTracker({}, None)
    ids = [first.update(0, frame, _squares(2)).custom_data]

    def another_request():
        other = FrameTracker({}, None)
        assert other.update(0, frame, _squares(1)).custom_data == [1]

    thread = threading.Thread(target=another_request)
    thread.start()
    thread.join()
    ids += [first.update(index, frame, _squares(3)).custom_data for index in (1, 2, 3)]
    assert ids[0] == [1, 2] and all(frame[:2] == [1, 2] for frame in ids), ids
    assert all(frame[2] not in (1, 2) for frame in ids[1:]), f"the third square took an id in use: {ids}"
    # The SDK's BoT-SORT (6.74.51) gives an object first seen after the first frame a second track
    # on its second frame (its step 4 starts tracks for detections matched to unconfirmed ones).
    assert ids[-1] == [1, 2, 3], ids
    video = first.video_annotation(4, (120, 160))
    assert [frame.index for frame in video.frames] == [0, 1, 2, 3]
