"""A fine-tuned Kosmos-2 in Team Files: a folder of Hugging Face-format files (``config.json``,
safetensors weights, the processor's and tokenizer's files) fetched through the API into a
local cache keyed by the files' content, and checked before anyone loads it.

The folder's path comes from a client and its listing from the platform, so both are read as
hostile: the path must be an absolute Team Files path without ``..``, backslashes or control
characters; every listed file must sit directly in the folder under a plain name (a name with
a separator or starting with a dot is refused, never written); at most :data:`MAX_FILES` files
and :data:`MAX_BYTES` bytes. Pickled weights (``pytorch_model.bin``) are refused: loading one
runs code. A refusal is a :class:`CheckpointRefused` whose message names the field and says
what is allowed.

The cache: ``<cache root>/<key>/``, where the key is a hash of the listing (each file's name,
size and the platform's content hash; of the downloaded bytes when the listing has no hashes),
so the same files are downloaded once, whatever the folder is called, and changed files are a
new entry. A download goes into a temporary folder
beside it and is renamed into place only when complete and checked, so an entry is whole or
absent.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_FILES = 64
MAX_BYTES = 40 << 30  # the real model in fp32 is about 6.7 GB
MAX_PATH_CHARS = 1000
MODEL_TYPE = "kosmos-2"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
_BAD_PATH = re.compile(r"[\\\x00-\x1f\x7f]")


class CheckpointRefused(ValueError):
    """The folder is not a Kosmos-2 checkpoint this server will load; the message says why."""


def checked_folder(path: Any, field: str) -> str:
    """``path`` as a Team Files folder (``/a/b/``); :class:`CheckpointRefused` naming ``field``
    when it is not an absolute path free of ``..``, backslashes and control characters."""
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH_CHARS:
        raise CheckpointRefused(f"{field}: expected a Team Files folder such as '/kosmos2/finetuned/', got {path!r}")
    if _BAD_PATH.search(path) or ".." in path.split("/"):
        raise CheckpointRefused(
            f"{field}: a Team Files path without '..', backslashes or control characters, got {path!r}"
        )
    return path.rstrip("/") + "/"


def fetch_checkpoint(
    api, team_id: int, folder: str, cache_root: Path, progress: Callable[[int], None] | None = None
) -> Path:
    """The local copy of Team Files ``folder`` (checked with :func:`checked_folder` first), from
    the cache or downloaded with ``progress(bytes)`` callbacks; :class:`CheckpointRefused` when
    it is not a loadable Kosmos-2 checkpoint. ``api`` is a ``supervisely.Api``."""
    listing = api.file.list(team_id, folder, recursive=True, return_type="fileinfo")
    files = [info for info in listing if not getattr(info, "is_dir", False)]
    _check_listing(folder, files)
    listed = _key(files) if all(info.hash for info in files) else None
    if listed is not None and (cache_root / listed).is_dir():
        return cache_root / listed
    cache_root.mkdir(parents=True, exist_ok=True)
    partial = cache_root / f".{uuid.uuid4().hex}.partial"
    partial.mkdir()
    try:
        for info in files:
            target = partial / info.name
            api.file.download(team_id, info.path, str(target), progress_cb=progress)
            if target.stat().st_size != info.sizeb:
                raise CheckpointRefused(f"{info.path}: {target.stat().st_size} bytes arrived of {info.sizeb}")
        check_config(partial, folder)
        entry = cache_root / (listed or _content_key(partial))
        if not entry.is_dir():
            try:
                partial.rename(entry)
            except OSError:  # another deploy put the same files in place first
                if not entry.is_dir():
                    raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return entry


def check_config(local: Path, folder: str) -> None:
    """:class:`CheckpointRefused` unless ``local/config.json`` is a Kosmos-2 config."""
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointRefused(f"{folder}config.json: not readable JSON ({type(error).__name__})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != MODEL_TYPE:
        raise CheckpointRefused(f"{folder}config.json: model_type must be '{MODEL_TYPE}', got {model_type!r}")


def _check_listing(folder: str, files: list) -> None:
    if not files:
        raise CheckpointRefused(f"{folder}: no files there in Team Files (a folder of Hugging Face-format files)")
    if len(files) > MAX_FILES:
        raise CheckpointRefused(f"{folder}: {len(files)} files; a checkpoint folder holds at most {MAX_FILES}")
    for info in files:
        if info.path != folder + info.name or not _PLAIN_NAME.match(info.name or ""):
            raise CheckpointRefused(
                f"{folder}: every file must sit directly in the folder under a plain name "
                f"(letters, digits, '_', '-', '.'), got {info.path!r}"
            )
    if sum(info.sizeb or 0 for info in files) > MAX_BYTES:
        raise CheckpointRefused(f"{folder}: more than {MAX_BYTES >> 30} GiB of files")
    names = {info.name for info in files}
    missing = [
        what
        for what, options in (
            ("config", ("config.json",)),
            ("weights", WEIGHTS),
            ("processor", PROCESSOR_FILES),
            ("tokenizer", TOKENIZER_FILES),
        )  # fmt: skip
        if not names & set(options)
    ]
    if names & set(PICKLED) and not names & set(WEIGHTS):
        raise CheckpointRefused(
            f"{folder}: pickled weights ({', '.join(sorted(names & set(PICKLED)))}) are not loaded (loading one runs "
            "code); save the model with save_pretrained(safe_serialization=True) to get model.safetensors"
        )
    if missing:
        raise CheckpointRefused(
            f"{folder}: not a Kosmos-2 checkpoint folder, it lacks the {', '.join(missing)} file(s) (needs "
            f"config.json, {' or '.join(WEIGHTS)}, {' or '.join(PROCESSOR_FILES)} and {' or '.join(TOKENIZER_FILES)})"
        )


def _content_key(local: Path) -> str:
    """A hash of the downloaded files themselves (when the listing gave no content hashes)."""
    digest = hashlib.sha256()
    for path in sorted(local.iterdir()):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def _key(files: list) -> str:
    """A hash of what the files hold: names, sizes and the platform's content hashes."""
    rows = sorted((info.name, info.sizeb, info.hash) for info in files)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:32]
