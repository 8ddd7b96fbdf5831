"""Security: no token reaches the log, deploy requests cannot choose a path, a URL that cannot
be fetched is the caller's 400. (Loopback binding of CLI deploy: test_e2e.py.)"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import requests
from supervisely.nn.model.model_api import ModelAPI

from kosmos2_app.log_redaction import REDACTED, TokenRedactingFilter, redact
from tests.app_harness import png_bytes
from tests.server_process import app_env, free_port, server_command, start, stop

SERVER_TOKEN = "SERVER-SECRET-5d1f0a"
CLIENT_TOKEN = "CLIENT-SECRET-93be27"


@pytest.mark.parametrize("value,expected", [
    ('{"settings": {"max_new_tokens": 4}, "api_token": "abc123"}',
     '{"settings": {"max_new_tokens": 4}, "api_token": "***"}'),
    ({"state": {"apiToken": "x"}, "items": [{"x-api-key": "y", "n": 1}]},
     {"state": {"apiToken": REDACTED}, "items": [{"x-api-key": REDACTED, "n": 1}]}),
    ("GET /x?api_token=abc&page=2", "GET /x?api_token=***&page=2"),
    ("max_new_token=5 max_new_tokens: 7", "max_new_token=5 max_new_tokens: 7"),
])
def test_redact_replaces_token_values_and_nothing_else(value, expected):
    assert redact(value) == expected


def test_the_filter_redacts_message_arguments_and_extra_fields(monkeypatch):
    monkeypatch.setenv("API_TOKEN", SERVER_TOKEN)
    record = logging.LogRecord("logger", logging.DEBUG, __file__, 1, "token %s in %s", (SERVER_TOKEN, "x"), None)
    record.state = {"api_token": CLIENT_TOKEN}
    assert TokenRedactingFilter().filter(record)
    assert record.getMessage() == "token *** in x" and record.state == {"api_token": REDACTED}


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory, tiny_checkpoint):
    """The real server at LOG_LEVEL=debug (the SDK then logs every request's state), with a
    server API_TOKEN; yields its URL and its log file."""
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**app_env(tmp, tiny_checkpoint), "LOG_LEVEL": "debug", "API_TOKEN": SERVER_TOKEN}
    process = start(server_command(port), env, tmp / "server.log", url)
    try:
        ModelAPI(url=url).load("Kosmos-2", device="cpu")
        yield url, tmp / "server.log"
    finally:
        stop(process)


@pytest.mark.slow
def test_no_token_is_logged_however_a_client_sends_it(debug_server, monkeypatch, tmp_path):
    url, log = debug_server
    monkeypatch.setenv("API_TOKEN", CLIENT_TOKEN)  # the SDK's clients send it as api_token
    image = np.zeros((32, 32, 3), np.uint8)
    (tmp_path / "a.png").write_bytes(png_bytes(image))
    [prediction] = ModelAPI(url=url).predict(input=str(tmp_path / "a.png"), max_new_tokens=4)
    assert prediction.annotation is not None
    in_form = json.dumps({"settings": {"max_new_tokens": 4}, "api_token": CLIENT_TOKEN})
    response = requests.post(f"{url}/inference_image", data={"settings": in_form},
                             files={"files": ("a.png", png_bytes(image), "image/png")})
    assert response.status_code == 200, response.text
    body = {"state": {"settings": {"max_new_tokens": 4}, "api_token": CLIENT_TOKEN},
            "api_token": CLIENT_TOKEN, "context": {"apiToken": CLIENT_TOKEN}}
    assert requests.post(f"{url}/get_session_info", json=body).status_code == 200
    text = log.read_text()
    assert "Received a request to 'inference_image'" in text  # debug logging is on
    assert SERVER_TOKEN not in text and CLIENT_TOKEN not in text
    assert f'api_token\\": \\"{REDACTED}' in text or f'"api_token": "{REDACTED}' in text


@pytest.mark.slow
def test_an_image_url_that_cannot_be_fetched_is_a_400_naming_it(debug_server):
    url, _ = debug_server
    response = requests.post(f"{url}/inference_image_url",
                             json={"state": {"image_url": f"http://127.0.0.1:{free_port()}/x.png"}})
    assert response.status_code == 400 and response.json()["message"].startswith("image_url could not be fetched")
    assert requests.get(f"{url}/is_ready", timeout=5).status_code == 200


LISTED_INFO = {"meta": {"model_name": "Kosmos-2",
                        "model_files": {"checkpoint": "microsoft/kosmos-2-patch14-224"}}}


@pytest.mark.slow
def test_a_deploy_request_cannot_choose_the_checkpoint_path(debug_server):
    """The SDK takes ``model_files`` from the request; the app loads only what models.json lists."""
    url, _ = debug_server
    deploy = {"deploy_params": {"model_source": "Pretrained models", "device": "cpu",
                                "model_info": LISTED_INFO, "model_files": {"checkpoint": "/etc"}}}
    response = requests.post(f"{url}/deploy_from_api", json={"state": deploy})
    assert response.status_code == 400
    assert "model_files.checkpoint must be one of" in response.json()["message"]
    ModelAPI(url=url).load("Kosmos-2", device="cpu")  # the listed model still deploys
    assert requests.get(f"{url}/is_ready", timeout=5).status_code == 200
