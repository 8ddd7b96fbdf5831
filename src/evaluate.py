"""Evaluate Kosmos-2's boxes on labelled data: a project (COCO metrics, the threshold to cut at,
a report), RefCOCO/+/g or Flickr30k Entities: ``python src/evaluate.py --help``."""

import sys

from kosmos2_jobs.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
