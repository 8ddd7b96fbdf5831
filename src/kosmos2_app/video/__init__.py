"""Videos: a request's frames read beside inference, run through the app's one inference path in
batches, objects tracked across frames (see ``docs/supervisely.md``, "Videos").

* :mod:`.request`: which frames a request asks for (start, count or end, stride, direction),
  whether it tracks, checked once into a :class:`~.request.VideoRequest`;
* :mod:`.files`: a video file on the server: private, random name, size cap, what it holds;
* :mod:`.frames`: frames read and decoded in a thread of their own, a batch ahead of inference;
* :mod:`.tracking`: BoT-SORT (the SDK's) over each frame's boxes, and the video annotation;
* :mod:`.job`: one video request from its file to per-frame results and the video annotation.

Only the SDK-free modules are imported here: :mod:`.frames` (read by ``bench.video_bench`` on a
GPU machine without supervisely) must import without the SDK; import :mod:`.job` and
:mod:`.tracking` by their own names.
"""

from .files import VideoFile, VideoRefused, VideoStore
from .request import VideoRequest, video_request

__all__ = ["VideoFile", "VideoRefused", "VideoRequest", "VideoStore", "video_request"]
