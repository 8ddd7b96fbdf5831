"""Label every image of a folder, a Supervisely project folder or a Supervisely project with
Kosmos-2, on Ray: ``python src/label.py SOURCE --out FOLDER`` (``--help`` for the options)."""

import sys

from kosmos2_jobs.labelling.cli import main

if __name__ == "__main__":
    sys.exit(main())
