"""Download weights at image build time; fail loudly on any error.

    python docker/download_weights.py microsoft/kosmos-2-patch14-224 /weights/kosmos-2-patch14-224
    python docker/download_weights.py --sam2 facebook/sam2.1-hiera-large [FOLDER]

The first form saves Kosmos-2 and its processor into a folder; ``--sam2`` loads a SAM 2 model
into the Hugging Face cache (``HF_HOME``), where its hub id then loads offline, and saves it
into FOLDER too when one is given (the app does its own pre- and post-processing: SAM 2's
processor needs torchvision, which the image lacks). Nothing is caught: a failed download fails
the Docker build instead of shipping an image without weights.
"""

import sys

from transformers import AutoProcessor, Kosmos2ForConditionalGeneration, Sam2Model


def download(repo_id: str, folder: str) -> None:
    AutoProcessor.from_pretrained(repo_id).save_pretrained(folder)
    Kosmos2ForConditionalGeneration.from_pretrained(repo_id).save_pretrained(folder)


def download_sam2(repo_id: str, folder: str | None = None) -> None:
    model = Sam2Model.from_pretrained(repo_id)
    if folder:
        model.save_pretrained(folder)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    sam2 = arguments[:1] == ["--sam2"]
    arguments = arguments[1:] if sam2 else arguments
    if len(arguments) != 2 and not (sam2 and len(arguments) == 1):
        sys.exit(f"usage: {sys.argv[0]} HUB_ID FOLDER, or {sys.argv[0]} --sam2 HUB_ID [FOLDER]")
    (download_sam2 if sam2 else download)(*arguments)
    where = arguments[1] if len(arguments) == 2 else "the Hugging Face cache"
    print(f"{'SAM 2' if sam2 else 'Kosmos-2'} weights saved to {where}")
