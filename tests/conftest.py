"""Shared fixtures (the tiny trained checkpoint, an engine on it, the app deployed on it, a real
server), and each test's kind from its folder: ``tests/unit`` (no app), ``tests/integration`` (the
app in process, through ``TestClient``), ``tests/e2e`` (real servers, CLIs, Ray). Helpers shared by
several kinds live in ``tests/support``."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Under pytest-xdist the test process runs inside execnet's ``__channelexec__`` frame; importing
# supervisely walks the stack and imports every frame's module by name, which that one is not.
sys.modules.setdefault("__channelexec__", types.ModuleType("__channelexec__"))

if TYPE_CHECKING:
    from kosmos2_engine import Kosmos2Engine

# The fixtures import what they need when first used: this file loads before anything else
# (in each pytest-xdist process too), and supervisely alone takes seconds to import.
KINDS = ("unit", "integration", "e2e")


# How many examples each Hypothesis test draws: 500 in the whole suite; 150 in make test-fast
# (``--hypothesis-profile=fast``), which is for quick feedback while working.
FUZZ_PROFILES = {"default": 500, "fast": 150}


def pytest_configure(config):
    from hypothesis import settings

    for name, examples in FUZZ_PROFILES.items():
        settings.register_profile(name, max_examples=examples)


SLOW_FIXTURES = ("openvino_checkpoint",)  # a test that needs one of these is slow (an OpenVINO export)


def pytest_collection_modifyitems(config, items):
    """Mark every test with its kind, the folder it is in (``-m "not e2e"`` and so on), and as
    ``slow`` when it needs a fixture that takes long to make. Then order them longest first, as
    pytest-xdist hands them out: the Ray tests (one long run in one process), the other e2e
    modules, integration, unit; the many short tests fill the workers' last minutes."""
    tests = Path(__file__).parent
    kinds = {}
    for item in items:
        parts = Path(item.fspath).resolve().relative_to(tests).parts
        kind = parts[0] if parts[0] in KINDS else None
        if kind is None:
            raise pytest.UsageError(f"{item.nodeid}: a test belongs in tests/unit, tests/integration or tests/e2e")
        item.add_marker(kind)
        kinds[item.nodeid] = kind
        if any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES):
            item.add_marker("slow")
    rank = {"e2e": 1, "integration": 2, "unit": 3}
    items.sort(key=lambda item: 0 if is_ray_test(item.nodeid) else rank[kinds[item.nodeid]])


# The tests that start or stop Ray clusters (modules, or single tests by node id): the labelling
# job's cluster, and the docs' pages with ``ray stop``, which stops every Ray process of the
# machine. They must never run beside each other.
RAY_TESTS = (
    "tests/e2e/test_labelling_ray.py",
    "tests/e2e/test_readme.py::test_the_pages_that_start_ray_clusters_run_in_a_root_of_their_own",
)


def is_ray_test(nodeid: str) -> bool:
    return any(nodeid == test or nodeid.startswith(f"{test}::") for test in RAY_TESTS)


# Modules that share the session's ``live_server``: in one process, one server starts for them.
LIVE_SERVER_MODULES = (
    "tests/e2e/test_e2e.py",
    "tests/e2e/test_evaluation_e2e.py",
    "tests/e2e/test_platform_apps.py",
    "tests/e2e/test_videos.py",
)


def scope_of(nodeid: str) -> str:
    """The process group a test runs in under ``--dist loadscope``: "ray" for ``RAY_TESTS``,
    "live-server" for ``LIVE_SERVER_MODULES``, else its module, read from the front
    (pytest-xdist splits at the last "::", which a parameter such as ``[::1]`` holds: such a
    test got a scope, and a server, of its own)."""
    if is_ray_test(nodeid):
        return "ray"
    module = nodeid.split("::", 1)[0]
    return "live-server" if module in LIVE_SERVER_MODULES else module


def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist's ``--dist loadscope`` (``make test``), a module's tests go to one process
    (module fixtures are made once), and so do all of ``RAY_TESTS``, one after the other
    (:func:`scope_of`). Scopes are handed out in the order of the collection (see
    ``pytest_collection_modifyitems``), not pytest-xdist's default of the most tests first,
    which left the longest scopes to the end."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class ModulesWithRayTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ModulesWithRayTogether(config, log)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> str:
    """Folder of the tiny trained Kosmos-2 (built on first use, then cached)."""
    from tests.tiny_model.locate import tiny_checkpoint_folder

    return str(tiny_checkpoint_folder())


@pytest.fixture(scope="session")
def openvino_checkpoint(tmp_path_factory, tiny_checkpoint, worker_id) -> str:
    """A copy of the tiny checkpoint with its int8 and fp32 OpenVINO IR exported beside it, once
    per run: the test processes of one ``-n`` run share it (each export takes seconds)."""
    from filelock import FileLock

    from kosmos2_engine.runtime.openvino.export import export_openvino

    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker_id != "master" else root  # the folder every worker's basetemp is in
    folder = root / "openvino" / "tiny"
    with FileLock(str(root / "openvino.lock")):
        if not folder.exists():
            shutil.copytree(tiny_checkpoint, folder.with_name("tiny.partial"))
            folder.with_name("tiny.partial").rename(folder)
        for weights in ("int8", "fp32"):
            export_openvino(str(folder), weights, progress=lambda line: None)  # reused when done
    return str(folder)


@pytest.fixture(scope="session")
def engine(tiny_checkpoint) -> Kosmos2Engine:
    from kosmos2_engine import Kosmos2Engine

    return Kosmos2Engine.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    """A GUI-template app, deployed through /deploy_from_api as the model table's Serve does."""
    from kosmos2_app import Kosmos2
    from tests.support.app_harness import app_environment, client_for, deploy_on_cpu, infer_image
    from tests.support.helpers import SCENE_CASES, scene

    with app_environment(tmp_path_factory.mktemp("app"), tiny_checkpoint):
        model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
        model.serve()
        client = client_for(model)
        assert client.get("/is_ready").status_code == 503
        early = infer_image(client, scene(*SCENE_CASES[0])[0])
        assert early.status_code == 503 and "not deployed" in early.json()["message"]
        response = deploy_on_cpu(client)
        assert response.status_code == 200, response.text
        yield model, client


@pytest.fixture(scope="session")
def stand_in_api():
    """A stand-in Supervisely API on 127.0.0.1 (Team Files), for the session's live server."""
    from tests.support.stand_in_api import StandInSupervisely

    with StandInSupervisely() as api:
        yield api


LIVE_SERVER_TMP: dict[str, Path] = {}  # a live server's URL -> its temporary folder (TMPDIR)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, tiny_checkpoint, stand_in_api):
    """`uvicorn main:model.app --app-dir src` (what `make serve` runs) on 127.0.0.1, deployed with
    ModelAPI.load on the tiny model; its URL. Images up to 1 000 000 pixels; its Supervisely
    instance is ``stand_in_api``. One per test process: the tests that use it send requests, and
    one that deploys another model deploys the tiny model back."""
    import requests
    from supervisely.nn.model.model_api import ModelAPI

    from tests.support.server_process import app_env, free_port, server_command, start, stop

    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp / "tmp").mkdir()
    LIVE_SERVER_TMP[url] = tmp / "tmp"
    env = {
        **app_env(tmp, tiny_checkpoint),
        "KOSMOS2_MAX_IMAGE_PIXELS": "1000000",
        "SERVER_ADDRESS": stand_in_api.url,
        "TMPDIR": str(tmp / "tmp"),
    }
    process = start(server_command(port), env, tmp / "server.log", url)
    try:
        assert requests.get(f"{url}/is_ready", timeout=5).status_code == 503
        ModelAPI(url=url).load("Kosmos-2", device="cpu")
        yield url
    finally:
        stop(process)
