"""Cross-request batching: concurrent requests share model passes; failures stay their own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from kosmos2_engine import RequestBatcher, SettingsError, policy_from_settings
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, two_shapes
from tests.unit.test_tasks import vision_calls

MIXED_SETTINGS = [
    {"task": "caption"},
    {"task": "phrase_grounding", "phrases": "circle. square"},
    {"task": "vqa", "question": "What colour is the circle?"},
    {"task": "referring_expression", "expression": "the square", "top_k": 3},
    {"task": "region_description", "regions": [[0, 0, 60, 60]]},
    {"task": "caption", "max_new_tokens": 9},
]


@pytest.fixture(scope="module")
def images():
    return [scene(*case)[0] for case in SCENE_CASES] + [two_shapes(*case)[0] for case in TWO_SHAPE_CASES]


def rounded(outcome):
    """Results with box scores rounded: batch composition moves them by float noise (~1e-7)."""
    if isinstance(outcome, Exception):
        return outcome
    return [
        replace(result, boxes=tuple(replace(box, score=round(box.score, 4)) for box in result.boxes))
        for result in outcome
    ]


def concurrently(batcher, requests, barrier_wait=True):
    """Run ``batcher.run(images, policy)`` for every request from its own thread, all released
    at once. Returns each outcome: a result list or the exception raised."""
    start = threading.Barrier(len(requests))

    def call(request):
        start.wait()
        try:
            return rounded(batcher.run(*request))
        except Exception as error:  # noqa: BLE001 - the outcome under test
            return error

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def test_concurrent_single_image_requests_share_one_vision_pass_and_decode(engine, images):
    batcher = RequestBatcher(engine, max_wait_s=0.5)
    policy = policy_from_settings({"task": "caption"})
    requests = [([image], policy) for image in images[:6]]
    expected = [rounded(engine.run(*request)) for request in requests]
    with vision_calls(engine) as calls:
        outcomes = concurrently(batcher, requests)
    assert outcomes == expected
    assert calls == [6] and batcher.joint_runs == 1


def test_requests_of_different_tasks_batched_together_equal_running_alone(engine, images):
    batcher = RequestBatcher(engine, max_wait_s=0.5)
    requests = [
        ([images[i], images[-1 - i]], policy_from_settings(settings)) for i, settings in enumerate(MIXED_SETTINGS)
    ]
    expected = [rounded(engine.run(*request)) for request in requests]
    assert concurrently(batcher, requests) == expected
    assert batcher.joint_runs >= 1


def test_a_bad_request_fails_alone_before_queueing(engine, images):
    batcher = RequestBatcher(engine, max_wait_s=0.3)
    good = policy_from_settings({"task": "caption"})
    outside = policy_from_settings({"task": "region_description", "regions": [[0, 0, 5000, 10]]})
    outcomes = concurrently(batcher, [([images[0]], good), ([images[1]], outside), ([images[2]], good)])
    assert isinstance(outcomes[1], SettingsError) and outcomes[1].field == "regions[0]"
    assert outcomes[0] == rounded(engine.run([images[0]], good))
    assert outcomes[2] == rounded(engine.run([images[2]], good))


def test_a_joint_run_that_fails_is_retried_request_by_request(engine, images, monkeypatch, caplog):
    """A model error in a shared batch: the poisoned request gets it, the others their results."""
    policy = policy_from_settings({"task": "caption"})
    poisoned = images[1]
    poisoned_pixels = engine.preprocess([poisoned])[0]
    real_execute = engine.execute

    def fragile_execute(runs):
        if any(np.array_equal(pixels, poisoned_pixels) for run in runs for pixels in run.pixels):
            raise RuntimeError("simulated kernel failure")
        return real_execute(runs)

    expected = [rounded(engine.run([images[0]], policy)), rounded(engine.run([images[2]], policy))]
    monkeypatch.setattr(engine, "execute", fragile_execute)
    batcher = RequestBatcher(engine, max_wait_s=0.5)
    outcomes = concurrently(batcher, [([images[0]], policy), ([poisoned], policy), ([images[2]], policy)])
    assert [outcomes[0], outcomes[2]] == expected
    assert isinstance(outcomes[1], RuntimeError) and "simulated" in str(outcomes[1])
    assert "running them one by one" in caplog.text
    assert rounded(batcher.run([images[0]], policy)) == expected[0]  # still serving


def test_max_images_caps_a_joint_run(engine, images):
    batcher = RequestBatcher(engine, max_wait_s=0.5, max_images=2)
    policy = policy_from_settings({"task": "caption", "max_new_tokens": 4})
    with vision_calls(engine) as calls:
        concurrently(batcher, [([image], policy) for image in images[:5]])
    assert sum(calls) == 5 and max(calls) <= 2


def test_closed_batcher_refuses_work_and_its_worker_ends(engine, images):
    batcher = RequestBatcher(engine, max_wait_s=0.0)
    policy = policy_from_settings({"task": "caption", "max_new_tokens": 4})
    batcher.run([images[0]], policy)
    worker = batcher._worker
    batcher.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.run([images[0]], policy)


@pytest.mark.parametrize("wait,images_cap", [(-1, 4), (0.01, 0)])
def test_bad_batcher_options_are_refused(engine, wait, images_cap):
    with pytest.raises(ValueError, match="max_wait_s"):
        RequestBatcher(engine, max_wait_s=wait, max_images=images_cap)


def test_a_lone_request_runs_at_once(engine, images):
    """No waiting for company: a request to an idle engine starts its run at once."""
    runs = []
    batcher = RequestBatcher(engine, observer=runs.append)
    policy = policy_from_settings({"task": "caption", "max_new_tokens": 4})
    for image in images[:5]:
        batcher.run([image], policy)
    assert [run.images for run in runs] == [1] * 5
    assert max(wait for run in runs for wait in run.queue_wait_s) < 0.05
    batcher.close()


def test_requests_that_arrive_while_the_engine_is_busy_share_the_next_run(engine, images, monkeypatch):
    policy = policy_from_settings({"task": "caption", "max_new_tokens": 4})
    expected = [rounded(engine.run([image], policy)) for image in images[:4]]
    release, running = threading.Event(), threading.Event()
    real_execute = engine.execute

    def slow_first_run(runs):
        if not running.is_set():
            running.set()
            release.wait(10)
        return real_execute(runs)

    monkeypatch.setattr(engine, "execute", slow_first_run)
    seen = []
    batcher = RequestBatcher(engine, observer=seen.append)
    first = batcher.submit([images[0]], policy)
    running.wait(10)
    later = [batcher.submit([image], policy) for image in images[1:4]]  # queued behind the running one
    release.set()
    outcomes = [rounded(future.result(timeout=60)) for future in [first, *later]]
    assert outcomes == expected
    assert [(run.images, len(run.queue_wait_s)) for run in seen] == [(1, 1), (3, 3)] and batcher.joint_runs == 1
    batcher.close()


def test_calls_run_on_the_engine_thread_between_runs(engine, images):
    batcher = RequestBatcher(engine)
    assert batcher.call(lambda: threading.current_thread().name) == "kosmos2-engine"
    with pytest.raises(ZeroDivisionError):
        batcher.call(lambda: 1 / 0)
    assert batcher.run([images[0]], policy_from_settings({"max_new_tokens": 2}))  # still serving
    batcher.close()
