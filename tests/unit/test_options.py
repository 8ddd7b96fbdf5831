"""Serving options from the environment: defaults per device, and bad values named."""

from __future__ import annotations

import os

import pytest

from kosmos2_app.config import (
    BATCH_WAIT_ENV,
    COMPILE_ENV,
    HOST_ENV,
    MAX_BATCH_ENV,
    MAX_IMAGE_PIXELS_ENV,
    OPENCV_PIXELS_ENV,
    PORT_ENV,
    ServingOptions,
    limit_opencv_decoding,
    listen_address,
    max_image_pixels,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (MAX_BATCH_ENV, BATCH_WAIT_ENV, COMPILE_ENV, MAX_IMAGE_PIXELS_ENV, OPENCV_PIXELS_ENV):
        monkeypatch.setenv(name, "")  # records the original value (or absence) for teardown
        monkeypatch.delenv(name)


def test_defaults_per_device():
    assert ServingOptions.from_environment("cpu") == ServingOptions(16, 0.0, False)
    assert ServingOptions.from_environment("cuda:0") == ServingOptions(64, 0.0, True)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv(MAX_BATCH_ENV, "8")
    monkeypatch.setenv(BATCH_WAIT_ENV, "0")
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert ServingOptions.from_environment("cuda") == ServingOptions(8, 0.0, False)


@pytest.mark.parametrize(
    "name,value",
    [
        (MAX_BATCH_ENV, "0"),
        (MAX_BATCH_ENV, "many"),
        (MAX_BATCH_ENV, "257"),
        (BATCH_WAIT_ENV, "-1"),
        (BATCH_WAIT_ENV, "1.5"),
        (COMPILE_ENV, "yes"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        ServingOptions.from_environment("cpu")


def test_image_pixel_limit_goes_to_opencv(monkeypatch):
    assert max_image_pixels() == 100_000_000
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "2000000")
    assert limit_opencv_decoding() == 2_000_000
    assert os.environ[OPENCV_PIXELS_ENV] == "2000000"


@pytest.mark.parametrize("value", ["0", "lots", str(2**30 + 1)])
def test_bad_image_pixel_limit_is_named(monkeypatch, value):
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, value)
    with pytest.raises(ValueError, match=MAX_IMAGE_PIXELS_ENV):
        limit_opencv_decoding()


def test_listen_address_is_loopback_unless_told(monkeypatch):
    monkeypatch.delenv(HOST_ENV, raising=False)
    monkeypatch.delenv(PORT_ENV, raising=False)
    assert listen_address() == ("127.0.0.1", 8000)
    monkeypatch.setenv(HOST_ENV, "0.0.0.0")
    monkeypatch.setenv(PORT_ENV, "9000")
    assert listen_address() == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    "name,value", [(HOST_ENV, "http://x/"), (HOST_ENV, "a b"), (PORT_ENV, "0"), (PORT_ENV, "65536"), (PORT_ENV, "http")]
)
def test_bad_listen_address_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        listen_address()
