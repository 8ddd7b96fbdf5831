"""The lean serving path: answers equal to the SDK's own path for every task, metrics that count
exactly what was sent, every piece of model work on the engine's one thread, and
``make gpu-check``'s dry run."""

from __future__ import annotations

import json
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kosmos2_app import sdk_seam as sdk
from kosmos2_app.model import Kosmos2
from kosmos2_engine import Kosmos2Engine
from tests.support.app_harness import app_environment, client_for, deploy_on_cpu, infer_image, png_bytes
from tests.support.helpers import SCENE_CASES, TWO_SHAPE_CASES, scene, two_shapes

EVERY_TASK = [
    {"max_new_tokens": 24},
    {"task": "detailed_caption"},
    {"task": "phrase_grounding", "phrases": "circle. square. triangle"},
    {"task": "phrase_grounding", "phrases": "circle. square", "classes": ["square"]},
    {"task": "referring_expression", "expression": "the red circle"},
    {"task": "referring_expression", "expression": "the blue square", "top_k": 3},
    {"task": "vqa", "question": "What colour is the circle?"},
    {"task": "region_description", "regions": [[0, 0, 30, 30], [10, 5, 60, 40]]},
    {"task": "custom", "prompt": "<grounding> An image of"},
    {"confidence_threshold": 0.15},
]


@pytest.fixture(scope="module")
def images():
    return [two_shapes(*TWO_SHAPE_CASES[0])[0], scene(*SCENE_CASES[3])[0]]


def sdk_path(model, images, settings) -> list[dict]:
    """What the SDK's own image inference (request manager, bookkeeping, formatting) answers."""
    results = model.inference_requests_manager.run(sdk.infer_images, model, images, {"settings": dict(settings)})
    return json.loads(json.dumps(results))


@pytest.mark.parametrize("settings", EVERY_TASK, ids=lambda s: s.get("task", "caption") + str(sorted(s)))
def test_every_task_answers_as_the_sdks_own_path(served, images, settings):
    model, client = served
    single = infer_image(client, images[0], **settings)
    assert single.status_code == 200, single.text
    assert single.json() == sdk_path(model, images[:1], settings)[0]
    files = [("files", ("same.png", png_bytes(image), "image/png")) for image in images]
    batch = client.post("/inference_batch", files=files, data={"settings": json.dumps({"settings": settings})})
    assert batch.status_code == 200, batch.text
    assert batch.json() == sdk_path(model, images, settings)


def metrics(client) -> dict[tuple, float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_exactly_the_requests_sent_and_the_runs_made(served, images):
    _, client = served
    before = metrics(client)
    for _ in range(3):
        assert infer_image(client, images[1], max_new_tokens=8).status_code == 200
    for bad in ({"max_new_tokens": 0}, {"task": "vqa"}):
        assert infer_image(client, images[1], **bad).status_code == 400
    assert client.post("/no_such_route", json={}).status_code == 404
    assert client.get("/is_ready").status_code == 200
    after = metrics(client)
    image_route = {"route": "/inference_image"}
    assert moved(before, after, "kosmos2_requests_total", **image_route, task="caption", status="200") == 3
    assert moved(before, after, "kosmos2_requests_total", **image_route, task="", status="400") == 2
    assert moved(before, after, "kosmos2_requests_total", route="other", task="", status="404") == 1
    assert moved(before, after, "kosmos2_requests_total", route="/is_ready", task="", status="200") == 1
    assert moved(before, after, "kosmos2_request_duration_seconds_count", **image_route) == 5
    assert moved(before, after, "kosmos2_batch_images_count") == 3  # one engine run per request, one after another
    assert moved(before, after, "kosmos2_batch_images_sum") == 3
    assert moved(before, after, "kosmos2_batch_prompts_sum") == 3
    assert moved(before, after, "kosmos2_batch_queue_wait_seconds_count") == 3
    assert 3 <= moved(before, after, "kosmos2_generated_tokens_total") <= 24
    assert moved(before, after, "kosmos2_engine_busy_seconds_total") > 0
    assert "kosmos2_gpu_memory_allocated_bytes" not in {name for name, _ in after}  # no CUDA here


def test_the_metrics_need_the_key_when_there_is_one(tmp_path, tiny_checkpoint):
    with app_environment(tmp_path, tiny_checkpoint) as environment:
        environment.setenv("KOSMOS2_API_KEY", "k" * 20)
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        assert client.get("/metrics").status_code == 401
        scrape = client.get("/metrics", headers={"Authorization": "Bearer " + "k" * 20})
        assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")


def test_all_model_work_runs_on_the_engine_thread(tmp_path, tiny_checkpoint, monkeypatch):
    """Loading runs in a thread that ends; warm-up, moves and runs on the batcher's engine
    thread only (two threads running torch slow each other's small ops down on CPU)."""
    seen: dict[str, set] = {"load": set(), "warm_up": set(), "to": set(), "execute": set()}
    for name in ("warm_up", "to", "execute"):
        original = getattr(Kosmos2Engine, name)

        def spy(self, *args, _original=original, _name=name):
            seen[_name].add(threading.current_thread().name)
            return _original(self, *args)

        monkeypatch.setattr(Kosmos2Engine, name, spy)
    load = Kosmos2Engine.load.__func__
    monkeypatch.setattr(Kosmos2Engine, "load", classmethod(
        lambda cls, *a, **k: seen["load"].add(threading.current_thread().name) or load(cls, *a, **k)))  # fmt: skip
    with app_environment(tmp_path, tiny_checkpoint):
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        assert deploy_on_cpu(client).status_code == 200
        assert infer_image(client, scene(*SCENE_CASES[0])[0], max_new_tokens=4).status_code == 200
        model.load_model(**{**model._deploy_params, "device": "cpu:0"})  # as the idle freeze's wake-up does
    [load_thread] = seen.pop("load")
    assert load_thread.startswith("kosmos2-load")
    assert seen == {"warm_up": {"kosmos2-engine"}, "to": {"kosmos2-engine"}, "execute": {"kosmos2-engine"}}
    assert not any(thread.name == load_thread for thread in threading.enumerate())


ROI = {"points": {"exterior": [[20, 10], [139, 109]], "interior": []}}  # left 20, top 10, right 139, bottom 109


@pytest.mark.parametrize(
    "settings",
    [
        {"task": "phrase_grounding", "phrases": "circle. square"},
        {"task": "region_description", "regions": [[0, 0, 40, 40]]},
    ],
    ids=["grounding", "regions"],
)
def test_a_region_of_interest_answers_as_the_sdks_own_roi_path(served, images, settings):
    """The app crops and shifts itself; the SDK's ROI decorator (crop, our predict_batch, shift)
    must give the same annotation, for ``rectangle`` in the settings and in the state."""
    from supervisely.nn.inference import Inference

    model, client = served
    image = images[0]
    [reference] = Inference._inference_batched(model, source=[image], settings={**settings, "rectangle": ROI},
                                               data_to_return=[])  # fmt: skip
    expected = reference.to_json()
    assert expected["size"] == {"height": image.shape[0], "width": image.shape[1]} and expected["objects"]
    in_settings = infer_image(client, image, **settings, rectangle=ROI)
    assert in_settings.status_code == 200, in_settings.text
    assert in_settings.json()["annotation"] == expected
    in_state = client.post(
        "/inference_image",
        files=[("files", ("scene.png", png_bytes(image), "image/png"))],
        data={"settings": json.dumps({"settings": settings, "rectangle": ROI})},
    )
    assert in_state.json()["annotation"] == expected
    whole = infer_image(client, image, **settings).json()["annotation"]
    assert whole != expected  # the crop changes what the model sees


def test_a_region_of_interest_outside_the_image_or_malformed_is_a_400(served, images):
    _, client = served
    outside = {"points": {"exterior": [[0, 0], [5000, 10]], "interior": []}}
    response = infer_image(client, images[0], rectangle=outside)
    assert response.status_code == 400 and response.json()["message"].startswith("rectangle: ")
    response = infer_image(client, images[0], rectangle={"points": "nope"})
    assert response.status_code == 400 and "Supervisely rectangle" in response.json()["message"]
    response = infer_image(client, images[0], rectangles=[ROI, ROI])
    assert response.status_code == 400 and response.json()["message"].startswith("rectangles: ")


def test_every_route_enters_the_one_inference_path(served, images, monkeypatch):
    """The upload routes, the async batch, the extra task routes and the SDK's own inference all
    reach the engine through ``Kosmos2.submit``, and nothing else submits to the batcher."""
    import base64
    import time

    model, client = served
    entered, submitted = [], []
    submit, batcher_submit = model.submit, type(model._batcher).submit
    monkeypatch.setattr(
        model, "submit", lambda images, settings: entered.append(len(images)) or submit(images, settings)
    )

    def batcher_spy(self, images, policy):
        submitted.append(len(images))
        return batcher_submit(self, images, policy)

    monkeypatch.setattr(type(model._batcher), "submit", batcher_spy)
    encoded = base64.b64encode(png_bytes(images[0])).decode()
    files = [("files", (f"{i}.png", png_bytes(image), "image/png")) for i, image in enumerate(images)]
    assert infer_image(client, images[0], max_new_tokens=4).status_code == 200
    assert client.post("/inference_batch", files=files, data={"settings": "{}"}).status_code == 200
    question = {"state": {"image_base64": encoded, "question": "What is it?"}}
    assert client.post("/visual_question_answering", json=question).status_code == 200
    regions = {"state": {"image_base64": encoded, "regions": [[0, 0, 30, 30]]}}
    assert client.post("/describe_regions", json=regions).status_code == 200
    model.inference(images[1], {"max_new_tokens": 4})  # the SDK's public inference
    job = client.post("/inference_batch_async", files=files, data={"settings": "{}"}).json()
    for _ in range(600):
        state = {"state": {"inference_request_uuid": job["inference_request_uuid"]}}
        if client.post("/get_inference_progress", json=state).json().get("is_inferring") is False:
            break
        time.sleep(0.05)
    assert entered == [1, 2, 1, 1, 1, 2] and submitted == entered


def test_the_pixel_budget_never_holds_more_than_its_total_and_says_when_it_is_full():
    from kosmos2_app.pixel_budget import BudgetExhausted, PixelBudget

    budget = PixelBudget(total=100, wait_s=5.0)
    held, most, lock = [0], [0], threading.Lock()

    def use(pixels: int) -> None:
        with budget.granted(pixels):
            with lock:
                held[0] += pixels
                most[0] = max(most[0], held[0])
            threading.Event().wait(0.01)
            with lock:
                held[0] -= pixels

    threads = [threading.Thread(target=use, args=(pixels,)) for pixels in [60, 50, 40, 30, 100, 10] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] <= 100 and budget.peak <= 100 and budget.in_use == 0
    with budget.granted(1000):  # more than the total: granted alone, as the whole budget
        assert budget.in_use == 100
        budget.wait_s = 0.05
        with pytest.raises(BudgetExhausted, match="KOSMOS2_DECODE_BUDGET_PIXELS"), budget.granted(1):
            pass


def test_a_full_decoding_budget_is_a_503_with_retry_after(served, images, monkeypatch):
    from kosmos2_app.pixel_budget import PixelBudget

    model, client = served
    budget = PixelBudget(total=10_000, wait_s=0.1)
    monkeypatch.setattr(model.image_decoder, "budget", budget)
    with budget.granted(10_000):  # another request's images are decoding
        response = infer_image(client, images[0])
    assert response.status_code == 503 and response.headers["retry-after"] == "1", response.text
    assert "KOSMOS2_DECODE_BUDGET_PIXELS" in response.json()["message"]
    assert infer_image(client, images[0]).status_code == 200
