"""``python src/evaluate.py``: how good are Kosmos-2's boxes on labelled data.

    python src/evaluate.py project SOURCE --out REPORT_FOLDER [--phrases '{"person": "a person"}']
    python src/evaluate.py refer --refs 'refs(unc).p' --instances instances.json --images DIR --split val
    python src/evaluate.py flickr30k --entities DIR --images DIR --ids test.txt

SOURCE is a Supervisely-format project folder, ``project:<id>`` or ``dataset:<id>`` (through
``SERVER_ADDRESS`` / ``API_TOKEN``). ``--server URL`` asks a deployed server instead of loading
the engine here. Exit status: 0 done, 2 bad arguments, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from supervisely_io.sources import supervisely_source

from ..options import engine_choice, mapping_option


def _runner_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="a deployed server's URL (the SDK's Session); default: the engine here")
    parser.add_argument("--checkpoint", help="hub id or folder (default: KOSMOS2_CHECKPOINT, else models.json's)")
    parser.add_argument("--backend", help="pytorch (default) or an OpenVINO variant (CPU)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the report or the results")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python src/evaluate.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    project = commands.add_parser("project", help="phrase grounding on a labelled project: COCO metrics, a report")
    project.add_argument("source", help="a Supervisely-format project folder, project:<id> or dataset:<id>")
    project.add_argument("--classes", help="comma-separated classes to evaluate (default: every class with an area)")
    project.add_argument("--phrases", help="class -> phrase, JSON or YAML text or a file (default: the class name)")
    project.add_argument("--batch-size", type=int, default=8, help="images per run (default 8)")
    project.add_argument("--masks", action="store_true",
                         help="also segment every box with SAM 2 (KOSMOS2_SAM2) and measure mask AP against the "
                              "polygon and bitmap targets")  # fmt: skip
    project.add_argument("--upload-to", help="also upload the report to this folder of the team's files (TEAM_ID)")
    _runner_arguments(project)
    refer = commands.add_parser("refer", help="RefCOCO/+/g accuracy@0.5 from the refer toolkit's files")
    refer.add_argument("--refs", type=Path, required=True, help="refs(<split by>).p")
    refer.add_argument("--instances", type=Path, required=True, help="instances.json")
    refer.add_argument("--images", type=Path, required=True, help="the COCO train2014 images")
    refer.add_argument("--split", default="val")
    refer.add_argument("--name", default="RefCOCO", help="what to call the dataset in the results")
    _runner_arguments(refer)
    flickr = commands.add_parser("flickr30k", help="Flickr30k Entities Recall@1 from its annotation files")
    flickr.add_argument("--entities", type=Path, required=True, help="the folder with Sentences/ and Annotations/")
    flickr.add_argument("--images", type=Path, required=True, help="the Flickr30k images (<id>.jpg)")
    flickr.add_argument("--ids", type=Path, required=True, help="a split file: one image id per line (test.txt)")
    _runner_arguments(flickr)
    return parser.parse_args(argv)


def mapping_of(text: str | None) -> dict[str, str] | None:
    """``--phrases``: a class -> phrase mapping from JSON or YAML text or a file."""
    if not text:
        return None
    must = 'map class names to phrases, e.g. \'{"person": "a person"}\''
    mapping = mapping_option(text, "--phrases", must)
    if not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"--phrases must {must}")
    return {str(k): v for k, v in mapping.items()}


def make_runner(args):
    from .runners import EngineRunner, ServerRunner

    if args.server:
        return ServerRunner(args.server), f"the server at {args.server}"
    from kosmos2_engine import default_device

    device = args.device or default_device()
    return EngineRunner(*engine_choice(args.checkpoint, args.backend), device), f"the engine ({device})"


def image_reader(max_pixels: int, api_factory=None):
    """Reads a labelled image (a local file, or a download by id through ``api_factory``, by
    default ``sly.Api.from_env``) as the server decodes uploads."""
    from supervisely_io.images import decode_image
    from supervisely_io.sources import default_api_factory, read_local, read_remote

    def read(image):
        item = image.item
        data = (
            read_remote([item], api_factory or default_api_factory)[0] if item.image_id else read_local(item, 1 << 30)
        )
        return decode_image(data, max_pixels)

    return read


def run_project(args) -> int:
    from kosmos2_app import max_image_pixels

    from .ground_truth import read_project_folder, read_remote
    from .project import evaluate_project, require_mask_targets
    from .report import write_report

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    phrases = mapping_of(args.phrases)
    remote = supervisely_source(args.source)
    if remote:
        from supervisely_io.sources import default_api_factory

        truth = read_remote(default_api_factory(), *remote, classes, args.masks)
    else:
        truth = read_project_folder(Path(args.source), classes, args.masks)
    if not truth.classes:
        raise ValueError(f"{args.source} has no class with an area to evaluate")
    if args.masks:
        require_mask_targets(truth)
    runner, runner_name = make_runner(args)
    read = image_reader(max_image_pixels())
    evaluation = evaluate_project(truth, runner, read, phrases, args.batch_size, _progress, args.masks)
    report = write_report(evaluation, args.out, args.source, read, runner_name)
    metrics = evaluation.measured
    print(f"AP {metrics.ap:.3f}, AP50 {metrics.ap50:.3f}, AP75 {metrics.ap75:.3f} on {len(evaluation.images)} images; "
          f"recommended confidence_threshold {metrics.recommended_threshold:.4g}")  # fmt: skip
    if evaluation.mask_metrics is not None:
        masks = evaluation.mask_metrics
        print(f"Mask AP {masks.ap:.3f}, AP50 {masks.ap50:.3f}, AP75 {masks.ap75:.3f} "
              f"({truth.mask_targets} polygon and bitmap targets)")  # fmt: skip
    print(f"Report: {report}")
    if args.upload_to:
        print(f"Uploaded to the team's files: {upload_report(args.out, args.upload_to)}")
    return 0


def upload_report(folder: Path, remote_dir: str, api=None) -> str:
    """The report folder into ``remote_dir`` of team ``TEAM_ID``'s files; where it went."""
    from kosmos2_app import team_id
    from supervisely_io.sources import default_api_factory

    team = team_id()
    if team is None:
        raise ValueError("--upload-to needs TEAM_ID (and SERVER_ADDRESS, API_TOKEN) in the environment")
    return (api or default_api_factory()).file.upload_directory(team, str(folder), remote_dir)


def run_protocol(args) -> int:
    from kosmos2_app import max_image_pixels

    from .protocols import read_flickr30k, read_refer, run_flickr30k, run_refer

    if args.command == "refer":
        cases = read_refer(args.refs, args.instances, args.split)
    else:
        ids = [line.strip() for line in args.ids.read_text().splitlines() if line.strip()]
        cases = read_flickr30k(args.entities, ids)
    runner, _ = make_runner(args)
    read = _file_reader(args.images, max_image_pixels())
    if args.command == "refer":
        result = run_refer(cases, runner, read, f"{args.name} {args.split} accuracy@0.5")
    else:
        result = run_flickr30k(cases, runner, read)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    print(f"{result.name}: {result.accuracy:.4f} ({result.right} of {result.cases}; "
          f"{result.unreadable_images} images unreadable)")  # fmt: skip
    return 0


def _file_reader(folder: Path, max_pixels: int):
    from supervisely_io.images import decode_image

    def read(name: str):
        path = (folder / name).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise ValueError(f"image {name!r} is outside {folder}")
        return decode_image(path.read_bytes(), max_pixels)

    return read


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from kosmos2_engine import SettingsError

    try:
        return run_project(args) if args.command == "project" else run_protocol(args)
    except (SettingsError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
