"""A minimal W3C WebDriver client over HTTP (``requests``) for Debian's ``chromedriver``: start
headless Chromium, open a page, run scripts, read the console, take a screenshot. No selenium
(its current release needs a newer certifi than the pinned one) and no browser download."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from tests.support.server_process import free_port

CHROMEDRIVER, CHROMIUM = shutil.which("chromedriver"), shutil.which("chromium")


class HeadlessChromium:
    """``with HeadlessChromium() as browser: browser.open(url)`` ..."""

    def __init__(self, width: int = 1280, height: int = 900):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.size = (width, height)
        self.driver: subprocess.Popen | None = None
        self.session = ""
        self.scratch = ""  # TMPDIR of chromedriver and Chromium (their profiles), removed on exit

    def __enter__(self) -> HeadlessChromium:
        self.scratch = tempfile.mkdtemp(prefix="headless-chromium-")
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": self.scratch},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/status", timeout=2).json()["value"]["ready"]:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        size = f"--window-size={self.size[0]},{self.size[1]}"
        options = {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", size],
        }
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": {"browser": "ALL"}}
        self.session = self._call("post", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.session:
                requests.delete(f"{self.base}/session/{self.session}", timeout=10)
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=10)
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _call(self, method: str, path: str, body: dict | None = None):
        response = getattr(requests, method)(f"{self.base}{path}", json=body, timeout=120)
        value = response.json()["value"]
        if response.status_code != 200:
            raise RuntimeError(f"WebDriver {path}: {value}")
        return value

    def _session(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._session("post", "/url", {"url": url})

    def run(self, script: str, *args):
        """Run ``script`` (a function body) in the page; its return value."""
        return self._session("post", "/execute/sync", {"script": script, "args": list(args)})

    def run_async(self, script: str, *args):
        """Run ``script``, which calls ``arguments[arguments.length - 1](result)`` when done."""
        return self._session("post", "/execute/async", {"script": script, "args": list(args)})

    def console(self) -> list[dict]:
        """Browser console entries since the last call: [{"level", "message"}]."""
        return self._session("post", "/se/log", {"type": "browser"})

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._session("get", "/screenshot")))
        return path
