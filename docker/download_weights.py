"""Download the Kosmos-2 weights into a folder at image build time; fail loudly on any error.

    python docker/download_weights.py microsoft/kosmos-2-patch14-224 /weights/kosmos-2-patch14-224

Nothing is caught: a failed download fails the Docker build instead of shipping an image
without weights.
"""

import sys

from transformers import AutoProcessor, Kosmos2ForConditionalGeneration


def download(repo_id: str, folder: str) -> None:
    AutoProcessor.from_pretrained(repo_id).save_pretrained(folder)
    Kosmos2ForConditionalGeneration.from_pretrained(repo_id).save_pretrained(folder)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} HUB_ID FOLDER")
    download(sys.argv[1], sys.argv[2])
    print(f"Kosmos-2 weights saved to {sys.argv[2]}")
