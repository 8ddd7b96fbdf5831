"""The tiny checkpoint's folder in a fraction of a second when nothing it depends on has changed.

    make tiny-checkpoint      (or: PYTHONPATH=src:. python -m tests.tiny_model.locate)

The exact check, :func:`tests.tiny_model.build.cache_key`, imports torch and transformers and
draws and tokenises 256 scenes: about 8 s, paid by every ``make tiny-checkpoint`` of the docs and
by every test process. Everything that key reads comes from the files of ``tests/tiny_model``
(the committed checkpoint included), the engine's source (its prompts) and the installed
packages. A hash of those, the *stamp*, names a small record under the cache root that holds the
folder and key the exact check found. Any edit to one of those files, or another version of a
package, gives another stamp: the exact check runs again and records its answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE_ENV = "TINY_KOSMOS2_CACHE"  # moves the root of built checkpoints and stamps
REPORT = "build_report.json"  # written into a checkpoint by its build; holds its key
PACKAGES = ("torch", "transformers", "tokenizers", "pillow", "numpy")


def committed_checkpoint() -> Path:
    """The committed checkpoint's folder as it is, whatever the installed stack: for a machine
    that runs another torch than the pin (the lent GPU's image), where the exact check would
    rebuild it (about 40 minutes). Its weights load under any torch and transformers that read
    safetensors; tests that compare two paths on the same weights (compiled against eager,
    bf16 against fp32) need no more."""
    return HERE / "checkpoint"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, REPO / ".cache" / "tiny-kosmos2"))


def key_of(folder: Path) -> str | None:
    """The key a checkpoint folder was built with, or None when it has no build report."""
    report = folder / REPORT
    return json.loads(report.read_text()).get("key") if report.is_file() else None


def stamp_inputs() -> list[Path]:
    """Every file the exact key can read: this folder's (not caches) and the engine's source."""
    mine = [p for p in HERE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    engine = (REPO / "src" / "kosmos2_engine").rglob("*.py")
    return sorted([*mine, *engine])


def stamp(files: Iterable[Path], root: Path = REPO, packages: Iterable[str] = PACKAGES) -> str:
    """A hash of the files' names (under ``root``) and bytes, the packages' versions and
    Python's version."""
    digest = hashlib.sha256(f"python={sys.version_info[:2]}".encode())
    for path in files:
        digest.update(f"\0{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
    for name in packages:
        digest.update(f"\0{name}={metadata.version(name)}".encode())
    return digest.hexdigest()[:16]


def recorded(record: Path) -> Path | None:
    """The folder a stamp's record names, if that folder still holds the recorded key."""
    if not record.is_file():
        return None
    entry = json.loads(record.read_text())
    folder = Path(entry["folder"])
    return folder if key_of(folder) == entry["key"] else None


def tiny_checkpoint_folder(log=print) -> Path:
    """The folder of the tiny checkpoint: from the stamp's record, else from the exact check
    (which builds the checkpoint if needed), whose answer is then recorded."""
    record = cache_root() / "stamps" / f"{stamp(stamp_inputs())}.json"
    folder = recorded(record)
    if folder is not None:
        return folder
    from .build import ensure_tiny_checkpoint

    folder = ensure_tiny_checkpoint(log)
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps({"folder": str(folder), "key": key_of(folder)}))
    os.replace(partial, record)  # whole or absent, whichever test process writes it first
    return folder


def main() -> int:
    print(tiny_checkpoint_folder(log=lambda line: print(line, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
