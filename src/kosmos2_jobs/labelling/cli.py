"""``python src/label.py SOURCE --out FOLDER``: label every image of a folder, a Supervisely
project folder, or a Supervisely project or dataset (``project:<id>``, ``dataset:<id>``) with
any Kosmos-2 task, on Ray (a new local Ray, or the cluster of ``RAY_ADDRESS``).

Exit status: 0 when the job ran to the end (failed images are listed, not fatal), 2 for bad
arguments or settings, 130 when interrupted (rerun the same command to finish), 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..options import engine_choice, mapping_option

EPILOG = """examples:
  python src/label.py photos --out photos-labelled
  python src/label.py photos --out grounded --settings '{"task": "phrase_grounding", "phrases": ["a dog"]}'
  python src/label.py photos --out masks --settings '{"task": "phrase_grounding", "phrases": ["a dog"], "masks": true}'
  RAY_ADDRESS=10.0.0.5:6379 python src/label.py project:123 --out /shared/p123 --upload create
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python src/label.py",
        description="Label every image of a source with Kosmos-2 on Ray; write a Supervisely project.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="a folder of images, a Supervisely project folder, project:<id> or dataset:<id>")
    parser.add_argument("--out", required=True, type=Path, help="the output project folder (a rerun resumes it)")
    parser.add_argument(
        "--task", help="the task (caption, detailed_caption, phrase_grounding, ...); same as in --settings"
    )
    parser.add_argument(
        "--settings", default="{}", help="inference settings as JSON or YAML text, or a .json/.yaml file"
    )
    parser.add_argument(
        "--checkpoint", help="hub id or folder (default: KOSMOS2_CHECKPOINT, else the models.json weights)"
    )
    parser.add_argument(
        "--sam2", help="the SAM 2 (hub id or folder) for masks: true (default: KOSMOS2_SAM2, else sam2.1-hiera-tiny)"
    )
    parser.add_argument(
        "--backend", help="pytorch (default, or KOSMOS2_BACKEND) or openvino-int8/-int4/-fp32/-int8-act (CPU)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda where the Ray cluster has GPUs")
    parser.add_argument("--actors", type=int, help="engine actors (default: one per GPU, or one per 8 CPU cores)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per engine call (default 16)")
    parser.add_argument("--upload", choices=("create", "append", "replace"),
                        help="then upload to Supervisely: a new project, or into the source's annotations")  # fmt: skip
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> dict:
    """``--settings`` (text or a file) with ``--task`` over it; ``ValueError`` when unreadable."""
    settings = mapping_option(args.settings, "--settings", 'be a mapping such as \'{"task": "caption"}\'')
    return {**settings, **({"task": args.task} if args.task else {})}


def build_job(args: argparse.Namespace):
    from kosmos2_app import max_image_pixels

    from .job import LabelJob

    checkpoint, backend = engine_choice(args.checkpoint, args.backend)
    return LabelJob(
        source=args.source,
        out=args.out,
        settings=settings_of(args),
        checkpoint=checkpoint,
        backend=backend,
        device=args.device,
        actors=args.actors,
        batch_size=args.batch_size,
        upload=args.upload,
        max_image_pixels=max_image_pixels(),
        **({"sam2": args.sam2} if args.sam2 else {}),
    )


def summary_lines(summary: dict, out: Path) -> list[str]:
    """What the command prints at the end (``out`` as the user typed it)."""
    counts = f"({summary['skipped']} done before, {summary['failed']} failed)"
    if summary["actors"]:
        actors = f"{summary['actors']} {summary['device']} actor{'s' if summary['actors'] != 1 else ''}"
        took = f"{summary['labelling_seconds']:.1f} s: {summary['images_per_second']:.2f} images/s on {actors}"
        first = f"Labelled {summary['done']} of {summary['images']} images {counts} in {took}."
    else:
        first = f"Nothing to label: {summary['images']} images {counts}."
    lines = [first, f"Project: {out}; failures: {Path(out) / 'labelling-failures.jsonl'}"]
    if "upload" in summary:
        upload = summary["upload"]
        lines.append(f"Uploaded {upload['uploaded']} annotations ({upload['mode']}) to project {upload['project_id']}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from kosmos2_engine import SettingsError

    try:
        job = build_job(args)
    except (SettingsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from .job import run_job

    try:
        summary = run_job(job, progress=lambda message: print(message, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print(f"Interrupted: what is written in {args.out} stays; run the same command again to finish.",
              file=sys.stderr)  # fmt: skip
        return 130
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(summary, args.out)))
    return 0
