"""What keeps the suite fast and right: ``make tiny-checkpoint`` answers without torch once the
exact check's answer is recorded (any change to what that check reads makes it run again), and
``make test`` runs each test in its module's process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tiny_model.locate import REPO, key_of, recorded, stamp


def test_a_recorded_answer_is_given_without_importing_torch(tiny_checkpoint):
    code = (
        "import sys; "
        "from tests.tiny_model.locate import tiny_checkpoint_folder as f; print(f(), 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [tiny_checkpoint, "False"]


def test_the_stamp_changes_with_any_byte_any_name_and_the_packages(tmp_path):
    files = [tmp_path / "a.py", tmp_path / "b.json"]
    files[0].write_text("x = 1\n")
    files[1].write_text("{}")
    first = stamp(files, tmp_path)
    assert stamp(files, tmp_path) == first
    files[0].write_text("x = 2\n")
    assert stamp(files, tmp_path) != first
    files[0].write_text("x = 1\n")
    assert stamp(files, tmp_path) == first
    files[1].rename(tmp_path / "c.json")
    assert stamp([files[0], tmp_path / "c.json"], tmp_path) != first
    assert stamp(files[:1], tmp_path, ["torch"]) != stamp(files[:1], tmp_path, ["numpy"])


def test_a_record_is_trusted_only_while_its_folder_holds_the_recorded_key(tmp_path):
    folder, record = tmp_path / "checkpoint", tmp_path / "record.json"
    folder.mkdir()
    record.write_text(json.dumps({"folder": str(folder), "key": "k1"}))
    assert key_of(folder) is None and recorded(record) is None
    (folder / "build_report.json").write_text(json.dumps({"key": "k1"}))
    assert recorded(record) == folder
    (folder / "build_report.json").write_text(json.dumps({"key": "k2"}))  # rebuilt since
    assert recorded(record) is None
    assert recorded(tmp_path / "absent.json") is None
    assert Path(folder).exists()


def test_each_test_runs_with_its_module_or_with_the_ray_tests():
    """``make test``'s scheduling (tests/conftest.py): a parameter holding "::" stays with its module."""
    from tests.conftest import LIVE_SERVER_MODULES, RAY_TESTS, scope_of

    module = "tests/e2e/test_request_cost.py"
    assert scope_of(f"{module}::test_ipv6_forms[[::ffff:127.0.0.1]]") == module
    assert scope_of(f"{module}::test_a[x]") == scope_of(f"{module}::test_b") == module
    assert {scope_of(test) for test in RAY_TESTS} == {scope_of(f"{RAY_TESTS[0]}::test_x[a::b]")} == {"ray"}
    assert scope_of("tests/e2e/test_readme.py::test_every_example_runs") == "tests/e2e/test_readme.py"
    assert {scope_of(f"{module}::test_x") for module in LIVE_SERVER_MODULES} == {"live-server"}
