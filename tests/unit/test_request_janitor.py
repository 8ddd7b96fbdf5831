"""What the SDK keeps of finished requests is bounded: tracebacks (and the images in their frames)
go at once, fully popped requests after ``keep_s``; running and unpopped ones stay."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import numpy as np
from supervisely.nn.inference.inference_request import InferenceRequestsManager

from kosmos2_app.request_janitor import FinishedRequestJanitor


class Image(np.ndarray):
    """An array that can be weakly referenced, to see whether anything still holds it."""


def _failing_call(image, inference_request):
    try:
        raise KeyError("inner")  # chained, as HTTPException(...) from SettingsError is
    except KeyError as error:
        raise ValueError(f"bad settings for an image of shape {image.shape}") from error


def _finished(manager, func, *args):
    request, future = manager.schedule_task(func, *args)
    future.exception() if func is _failing_call else future.result()
    deadline = time.monotonic() + 5
    while not request.is_finished() and time.monotonic() < deadline:
        time.sleep(0.01)
    return request


def test_a_failed_request_releases_its_image_at_once_and_keeps_its_report(monkeypatch):
    # pytest's log capture keeps each record's exc_info (and so the frames); a server's log
    # handler formats and drops it. Log nothing here.
    monkeypatch.setattr(logging.getLogger("logger"), "disabled", True)
    manager = InferenceRequestsManager()
    image = np.zeros((960, 1280, 3), np.uint8).view(Image)
    alive = weakref.ref(image)
    request = _finished(manager, _failing_call, image)
    del image
    gc.collect()
    assert alive() is not None  # the stored exception's traceback holds the image
    FinishedRequestJanitor(manager, keep_s=3600).sweep()
    gc.collect()
    assert alive() is None
    assert manager.get(request.uuid) is request and "bad settings" in request.exception_json()["message"]


def test_fully_popped_requests_go_after_keep_s_and_the_others_stay():
    manager = InferenceRequestsManager()
    popped = _finished(manager, lambda inference_request: inference_request.add_results([{"a": 1}]))
    popped.pop_pending_results()
    unpopped = _finished(manager, lambda inference_request: inference_request.add_results([{"b": 2}]))
    release = threading.Event()
    running, _ = manager.schedule_task(lambda inference_request: release.wait(5))
    janitor = FinishedRequestJanitor(manager, keep_s=0.2)
    assert janitor.sweep() == 0
    time.sleep(0.3)
    assert janitor.sweep() == 1
    assert manager.get(unpopped.uuid) is unpopped and manager.get(running.uuid) is running
    release.set()


def test_maybe_sweep_runs_at_most_once_per_interval():
    manager = InferenceRequestsManager()
    janitor = FinishedRequestJanitor(manager, keep_s=0, every_s=60)
    first = _finished(manager, lambda inference_request: None)
    janitor.maybe_sweep()
    second = _finished(manager, lambda inference_request: None)
    janitor.maybe_sweep()
    assert manager._inference_requests.keys() == {second.uuid} and first.uuid not in manager._inference_requests
