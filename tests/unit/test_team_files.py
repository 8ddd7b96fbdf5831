"""Fetching a checkpoint folder from Team Files (``supervisely_io.team_files``) over a fake
``api.file``: the cache key, downloads whole or absent, and every refusal naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from supervisely_io.team_files import CheckpointRefused, checked_folder, fetch_checkpoint

FILES = {
    "config.json": json.dumps({"model_type": "kosmos-2"}).encode(),
    "model.safetensors": b"weights",
    "processor_config.json": b"{}",
    "tokenizer.json": b"{}",
}


class FakeFiles:
    """``api.file`` over ``{path: bytes}``; ``hashes=False`` lists no content hashes; a download
    may be cut short by ``short``."""

    def __init__(self, files: dict[str, bytes], hashes: bool = True, short: str | None = None):
        self.files, self.hashes, self.short, self.downloads = files, hashes, short, []

    def list(self, team_id, folder, recursive=True, return_type="fileinfo"):
        return [
            SimpleNamespace(name=path.rsplit("/", 1)[1], path=path, sizeb=len(data), is_dir=False,
                            hash=str(hash(data)) if self.hashes else None)
            for path, data in self.files.items() if path.startswith(folder)
        ]  # fmt: skip

    def download(self, team_id, path, local, progress_cb=None):
        self.downloads.append(path)
        data = self.files[path][:-1] if path == self.short else self.files[path]
        Path(local).write_bytes(data)
        if progress_cb:
            progress_cb(len(data))


def _api(folder: str = "/ft/", **options) -> SimpleNamespace:
    return SimpleNamespace(file=FakeFiles({folder + name: data for name, data in FILES.items()}, **options))


def test_a_folder_is_downloaded_once_and_kept_whole(tmp_path):
    api = _api()
    got = []
    local = fetch_checkpoint(api, 1, "/ft/", tmp_path, got.append)
    assert sorted(p.name for p in local.iterdir()) == sorted(FILES) and sum(got) == sum(map(len, FILES.values()))
    assert fetch_checkpoint(api, 1, "/ft/", tmp_path) == local and len(api.file.downloads) == len(FILES)
    assert [p.name for p in tmp_path.iterdir()] == [local.name]  # nothing partial left


def test_without_content_hashes_the_key_is_the_downloaded_bytes(tmp_path):
    first = fetch_checkpoint(_api(hashes=False), 1, "/ft/", tmp_path)
    assert fetch_checkpoint(_api("/copy/", hashes=False), 1, "/copy/", tmp_path) == first  # same bytes, same entry
    changed = _api(hashes=False)
    changed.file.files["/ft/model.safetensors"] = b"other weights"
    assert fetch_checkpoint(changed, 1, "/ft/", tmp_path) != first


def test_a_download_cut_short_leaves_no_entry(tmp_path):
    with pytest.raises(CheckpointRefused, match="model.safetensors: 6 bytes arrived of 7"):
        fetch_checkpoint(_api(short="/ft/model.safetensors"), 1, "/ft/", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"/ft/tokenizer.json": None}, "lacks the tokenizer file(s)"),
        ({"/ft/config.json": b"{"}, "config.json: not readable JSON"),
        ({"/ft/config.json": b'{"model_type": "llama"}'}, "model_type must be 'kosmos-2', got 'llama'"),
        ({"/ft/.hidden": b"x"}, "under a plain name"),
        ({"/ft/sub/extra.json": b"x"}, "every file must sit directly in the folder"),
        ({f"/ft/f{i}.json": b"x" for i in range(61)}, "65 files; a checkpoint folder holds at most 64"),
    ],
)
def test_a_folder_that_is_no_kosmos2_checkpoint_is_refused_and_nothing_is_kept(tmp_path, change, message):
    api = _api()
    for path, data in change.items():
        api.file.files.pop(path, None)
        if data is not None:
            api.file.files[path] = data
    with pytest.raises(CheckpointRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        fetch_checkpoint(api, 1, "/ft/", tmp_path)
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    assert list(tmp_path.glob(".*")) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/b", "/a/b/"), ("/a/b/", "/a/b/"), ("/", "/")],
)
def test_a_team_files_folder_is_read_with_a_trailing_slash(path, expected):
    assert checked_folder(path, "f") == expected


@pytest.mark.parametrize("path", ["a/b", "/a/../b", "/a\\b", "/a\nb", "", None, 5, "/" + "a" * 1000])
def test_a_hostile_folder_is_refused_naming_the_field(path):
    with pytest.raises(CheckpointRefused, match="^field: "):
        checked_folder(path, "field")
