"""The README and every page of ``docs/`` are code: every fenced block in them is run, as a new
user would run it, and what it prints must be what the page shows. The pages run as one sequence,
the README first and then ``PAGES`` in order, against the server the README starts.

An HTML comment right before each fenced block says what it is:

* ``<!-- example -->``: run it (``python`` with the venv's Python, ``bash`` with the venv on
  ``PATH``), from the repository root, against the server the README started (its
  ``127.0.0.1:8000`` becomes the test server's address); it must exit 0. When the next fenced
  block is marked ``<!-- output -->``, what it printed must equal that block.
* ``<!-- example: serves -->``: it starts the server (``make serve``): run in the background on a
  free ``PORT`` until ``/is_alive`` answers; the examples after it call that server.
* ``<!-- example: setup -->``: the set-up commands: each is a Makefile target, and CI runs them.
* ``<!-- output -->``: what the example before it prints.
* ``<!-- output: times vary -->``: the same, with decimal numbers (times, rates) not compared.
* ``<!-- example: file-tree -->``: the source tree (in ``docs/architecture.md``), which must list
  every module and no other.

The table of each task's request and response (marked ``<!-- example: task-table -->``) is
checked row by row through ``Session``. A fenced block with no mark fails the test.

The folders the README's examples write (``GENERATED``, all git-ignored) are removed first, so
the examples run on what a fresh clone has, whatever an earlier run left there.

The pages that start and stop Ray clusters (``RAY_PAGES``: ``ray stop`` stops every Ray process
of the machine) run in a test of their own, beside the labelling job's tests and never beside
another Ray cluster, from a root of their own: a folder that links to every entry of the
repository but the generated ones, where the README's ``make samples`` runs first.

``KOSMOS2_README_RECORD=1 pytest tests/e2e/test_readme.py`` rewrites the outputs and the table
from a run (for a change that is meant to change them); review the diff before committing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import supervisely as sly

from tests.support.app_harness import REPO
from tests.support.server_process import README_SERVER_LOG, free_port, wait_until_alive

README = REPO / "README.md"
DOCS = REPO / "docs"
# The order the pages run in (each may use what an earlier one made: samples, the deployed server).
PAGES = [README] + [DOCS / name for name in (
    "api.md", "tasks.md", "labelling.md", "evaluation.md", "openvino.md", "speed.md", "security.md",
    "supervisely.md", "architecture.md", "testing.md", "troubleshooting.md",
)]  # fmt: skip
RAY_PAGES = [DOCS / "labelling.md"]  # run by test_the_pages_that_start_ray_clusters_run_in_a_root_of_their_own
README_MAX_LINES = 300
RECORD = os.environ.get("KOSMOS2_README_RECORD") == "1"
README_URL = "http://127.0.0.1:8000"
GENERATED = ("samples", "eval-samples", "predictions", "labels", "labels-cluster", "eval-report", "eval-report-server")
_BLOCK = re.compile(r"(?:<!-- (?P<mark>[^>]*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```\n", re.S)


@dataclass
class Block:
    mark: str | None
    lang: str
    body: str
    start: int  # offset of the body in its page
    end: int
    page: Path = README


def blocks(text: str, page: Path = README) -> list[Block]:
    return [Block(m["mark"], m["lang"], m["body"], m.start("body"), m.end("body"), page) for m in _BLOCK.finditer(text)]


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page.read_text(), page)]


def test_every_page_of_docs_is_run_and_the_readme_is_short():
    assert sorted(DOCS.glob("*.md")) == sorted(PAGES[1:]), "add the new page to PAGES"
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"the README has {lines} lines; move detail to docs/"


def test_every_fenced_block_says_how_it_is_checked():
    unmarked = [f"{b.page.name}: {b.body.splitlines()[0]}" for b in all_blocks() if b.mark is None]
    assert unmarked == [], f"blocks without a test mark: {unmarked}"


def test_every_relative_link_of_the_pages_leads_somewhere():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert broken == []


def test_the_setup_commands_are_make_targets_that_ci_runs():
    [setup] = [b for b in blocks(README.read_text()) if b.mark == "example: setup"]
    commands = [line.split("#")[0].strip() for line in setup.body.splitlines() if line.strip()]
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), re.M))
    assert commands == ["make venv", "make test"] and {"venv", "test"} <= targets
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make lint$", ci, re.M) and re.search(r"^make test$", ci, re.M)


def test_every_make_target_the_pages_name_exists():
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), re.M))
    text = "\n".join(page.read_text() for page in PAGES)
    code = "\n".join(re.findall(r"`([^`\n]+)`", text) + [b.body for b in all_blocks()])
    named = set(re.findall(r"\bmake (?:-s )?([a-z][a-z0-9-]+)", code))
    assert named - targets == set()


def test_the_file_tree_lists_every_module_and_nothing_else():
    [tree] = [b for b in all_blocks() if b.mark == "example: file-tree"]
    listed, folders = set(), {}  # indentation -> the folder a line at that indentation is in
    for line in tree.body.splitlines():
        name, depth = line.split()[0], len(line) - len(line.lstrip())
        path = REPO / name if name.startswith("src/") else folders[depth] / name
        if name.endswith("/"):
            folders[depth + 2] = path
        else:
            listed.add(path)
    modules = {p for p in (REPO / "src").rglob("*.py") if p.name != "__init__.py"}
    assert listed == modules, (sorted(map(str, listed - modules)), sorted(map(str, modules - listed)))


def _environment(port: int) -> dict[str, str]:
    """What a user's shell has after ``. .venv/bin/activate``, plus the free port."""
    unset = ("ENV", "TASK_ID", "DEBUG_WITH_SLY_NET", "PORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # not a user's shell
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PORT=str(port),
               VIRTUAL_ENV=str(Path(sys.executable).parents[1]))  # fmt: skip
    return env


def _run(block: Block, url: str, env: dict, root: Path = REPO) -> str:
    code = block.body.replace(README_URL, url)
    command = [sys.executable, "-"] if block.lang == "python" else ["bash", "-euo", "pipefail", "-s"]
    # A session of its own, as a user's terminal is: Ray's reaper, when a driver dies before it,
    # kills its whole process group, which would otherwise be the test runner's.
    result = subprocess.run(command, input=code, cwd=root, env=env, capture_output=True, text=True, timeout=600,
                            start_new_session=True)  # fmt: skip
    assert result.returncode == 0, (
        f"{block.page.name} example failed:\n{block.body}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


def _masked(text: str, mask: bool) -> str:
    """``text``, with every decimal number (a time, a rate) as ``#`` when ``mask``: counts,
    names and words must match, measured times cannot."""
    return re.sub(r"\d+\.\d+", "#", text) if mask else text


def _serve(block: Block, env: dict, port: int) -> subprocess.Popen:
    README_SERVER_LOG.parent.mkdir(exist_ok=True)
    log = README_SERVER_LOG.open("w")
    process = subprocess.Popen(["bash", "-c", block.body], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    wait_until_alive(f"http://127.0.0.1:{port}", process, Path(log.name), timeout=300)
    return process


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def _remove_generated() -> None:
    for name in GENERATED:
        ignored = subprocess.run(["git", "check-ignore", "-q", f"{name}/"], cwd=REPO).returncode == 0
        assert ignored, f"{name}/ is not git-ignored: the README test would delete a tracked folder"
        shutil.rmtree(REPO / name, ignore_errors=True)


def test_every_example_runs_and_prints_what_the_page_shows():
    text = README.read_text()
    _remove_generated()
    port = free_port()
    url, env = f"http://127.0.0.1:{port}", _environment(port)
    found = [block for block in all_blocks() if block.page not in RAY_PAGES]
    server, replacements = None, []
    try:
        for index, block in enumerate(found):
            if block.mark == "example: serves":
                server = _serve(block, env, port)
            elif block.mark == "example":
                assert server is not None or "8000" not in block.body, "an example calls the server before it starts"
                _check_example(block, _run(block, url, env), found, index, replacements)
        _check_task_table(text, url, replacements if RECORD else None)
    finally:
        if server is not None:
            _stop(server)
    _record(replacements)


def test_the_pages_that_start_ray_clusters_run_in_a_root_of_their_own(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in GENERATED:
            (root / entry.name).symlink_to(entry)
    [samples] = [b for b in blocks(README.read_text()) if b.mark == "example" and b.body.strip() == "make samples"]
    env, replacements = _environment(free_port()), []
    sequence = [samples, *(block for block in all_blocks() if block.page in RAY_PAGES)]
    for index, block in enumerate(sequence):
        if block.mark == "example":
            assert README_URL not in block.body, "a page that starts Ray calls no server"
            _check_example(block, _run(block, README_URL, env, root), sequence, index, replacements)
    labelled = sorted(p.name for p in (root / "labels").glob("*/ann/*.json"))
    assert labelled == ["blue_square.png.json", "shapes.png.json"]  # written in the root of links
    _record(replacements)


def _check_example(block: Block, printed: str, found: list[Block], index: int, replacements: list) -> None:
    """What ``block`` printed against the ``output`` block right after it, if there is one
    (in record mode, kept for :func:`_record` instead)."""
    following = found[index + 1] if index + 1 < len(found) else None
    if following is None or following.mark not in ("output", "output: times vary"):
        return
    if RECORD:
        replacements.append((following, printed))
        return
    shown, mask = following.body, following.mark == "output: times vary"
    message = f"{block.page.name} example:\n{block.body}\nprinted:\n{printed}"
    assert _masked(printed, mask) == _masked(shown, mask), message


def _record(replacements: list) -> None:
    """In record mode, each page with its recorded outputs (and table) written back."""
    if not RECORD:
        return
    for page in PAGES:
        text = page.read_text()
        mine = [item for item in replacements if item[0].page == page]
        for block, new in sorted(mine, key=lambda item: -item[0].start):
            text = text[: block.start] + new + text[block.end :]
        page.write_text(text)


TABLE_MARK = "<!-- example: task-table -->\n"


def _check_task_table(text: str, url: str, replacements: list | None) -> None:
    """Each row: ``| `settings JSON` | image tags | rectangles |``, run through ``Session`` on
    ``samples/shapes.png``; in record mode the rows are rewritten (appended to ``replacements``)."""
    start = text.index(TABLE_MARK) + len(TABLE_MARK)
    end = text.index("\n\n", start)
    lines = text[start:end].splitlines()
    rows = [_task_row(json.loads(line.split("`")[1]), url) for line in lines[2:]]
    if replacements is None:
        assert lines[2:] == rows, "README task table differs from the server's answers:\n" + "\n".join(rows)
    else:
        table = "\n".join(lines[:2] + rows) + "\n"
        replacements.append((Block("table", "", "", start, end + 1), table))


def _task_row(settings: dict, url: str) -> str:
    api = sly.Api("http://127.0.0.1:9", "unused", ignore_task_id=True)
    ann = sly.nn.inference.Session(api, session_url=url, inference_settings=settings).inference_image_path(
        str(REPO / "samples" / "shapes.png")
    )
    tags = "; ".join(f"{tag.name}: {tag.value}" for tag in ann.img_tags) or "–"
    rectangles = []
    for label in ann.labels:
        box = label.geometry
        extra = " ".join(
            f'{tag.name} "{tag.value}"' if isinstance(tag.value, str) else f"{tag.name} {tag.value}"
            for tag in label.tags
        )
        rectangles.append(f"`{label.obj_class.name}` [{box.top}, {box.left}, {box.bottom}, {box.right}] {extra}")
    return f"| `{json.dumps(settings)}` | {tags} | {'; '.join(rectangles) or '–'} |"
