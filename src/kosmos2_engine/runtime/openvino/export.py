"""Export a Kosmos-2 checkpoint to OpenVINO IR, compressed with NNCF, cached beside the weights.

    python -m kosmos2_engine.runtime.openvino.export microsoft/kosmos-2-patch14-224            # int8
    python -m kosmos2_engine.runtime.openvino.export /models/kosmos-2 --weights int4
    python -m kosmos2_engine.runtime.openvino.export /models/kosmos-2 --weights fp32 --output /ir
    python -m kosmos2_engine.runtime.openvino.export /models/kosmos-2 --weights int8-act --calibration photos/

Writes into ``<checkpoint folder>/openvino-<weights>/`` (a hub id resolves to its folder in the
hub cache):

* ``image_encoder.xml/.bin``: ``pixel_values`` (B, 3, S, S) -> image embeddings (B, 64, E);
* ``decoder.xml/.bin``: the text decoder with embeddings and ``lm_head`` inside and the KV
  cache as OpenVINO state (see :class:`~.graphs.DecoderGraph` for its inputs); it returns the
  last position's logits only;
* ``export_info.json``, written last: the fingerprint of the source checkpoint, the weight
  format and the versions that made the IR. A later export (or a deploy) with the same
  fingerprint reuses the IR; a changed checkpoint, format or exporter makes a new one.

Weights (of the text decoder, 1.3 of the 1.66 B parameters; the image encoder stays float32, see
:func:`~.convert.compress_decoder`): ``int8`` (default) is NNCF's INT8_ASYM weight compression
of every linear and embedding layer; ``int4`` is INT4_ASYM in groups of 64 on the linear layers
(embeddings and ``lm_head`` INT8); ``fp32`` compresses nothing. ``int8-act`` is ``int8`` with the
image encoder also quantised, weights and activations, by NNCF post-training quantisation
(:func:`~.convert.quantize_image_encoder`), calibrated on generated scenes or on ``--calibration
FOLDER`` (:mod:`.calibration`). Torch is needed here, not when serving the IR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

WEIGHT_FORMATS = ("int8", "int4", "fp32", "int8-act")
EXPORT_VERSION = 1  # bump when the graphs or their inputs change: older IRs are then re-exported
INFO_FILE = "export_info.json"
IMAGE_ENCODER = "image_encoder.xml"
DECODER = "decoder.xml"
_SAMPLED_BYTES = 4 << 20


def ir_folder(checkpoint_folder: Path, weights: str) -> Path:
    """Where the IR of ``weights`` for the checkpoint in ``checkpoint_folder`` is cached."""
    return Path(checkpoint_folder) / f"openvino-{weights}"


def source_fingerprint(checkpoint_folder: Path, weights: str, calibration: str = "") -> dict:
    """What decides the IR: config.json, each weight file's name, size and the SHA-256 of its
    first and last 4 MB, the weight format, the calibration images (``int8-act``) and the
    exporter's version and libraries."""
    import nncf
    import openvino

    folder = Path(checkpoint_folder)
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    weight_files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not weight_files:
        raise FileNotFoundError(f"no .safetensors or .bin weights in '{folder}'")
    for path in weight_files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_SAMPLED_BYTES))
            handle.seek(max(0, size - _SAMPLED_BYTES))
            digest.update(handle.read(_SAMPLED_BYTES))
    return {
        "source_sha256": digest.hexdigest(),
        "weights": weights,
        **({"calibration": calibration} if weights == "int8-act" else {}),
        "export_version": EXPORT_VERSION,
        "openvino": openvino.__version__.split("-")[0],
        "nncf": nncf.__version__,
    }


def cached_ir(
    checkpoint_folder: Path, weights: str, output: Path | None = None, calibration: str | Path | None = None
) -> Path | None:
    """The IR folder if it holds an export of this very checkpoint and format, else None."""
    target = Path(output) if output else ir_folder(checkpoint_folder, weights)
    expected = source_fingerprint(checkpoint_folder, weights, calibration_source(calibration))
    return target if holds_export(target, (IMAGE_ENCODER, DECODER), expected) else None


def holds_export(target: Path, files: Sequence[str], fingerprint: dict) -> bool:
    """Whether ``target`` holds ``files`` and an export info recording ``fingerprint``."""
    info = Path(target) / INFO_FILE
    if not info.is_file() or not all((Path(target) / name).is_file() for name in files):
        return False
    return json.loads(info.read_text()).get("fingerprint") == fingerprint


def staging_folder(target: Path) -> Path:
    """An empty folder beside ``target``, this process's own, to export into."""
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, target: Path, info: dict) -> None:
    """Write ``info`` (with its ``fingerprint``) into ``staging`` and put it in ``target``'s
    place. When another process (a labelling job's actors, two deploys) has just put an export
    of the same fingerprint there, that one is kept and ``staging`` dropped."""
    (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:  # target is there again, not empty: another process's export
        shutil.rmtree(staging, ignore_errors=True)
        if json.loads((target / INFO_FILE).read_text()).get("fingerprint") != info["fingerprint"]:
            raise


def calibration_source(calibration: str | Path | None) -> str:
    """How the calibration images are named in the fingerprint: the generated set, or the
    folder's resolved path."""
    from .calibration import GENERATED_SOURCE

    return str(Path(calibration).resolve()) if calibration else GENERATED_SOURCE


def export_openvino(
    checkpoint: str,
    weights: str = "int8",
    output: str | Path | None = None,
    progress: Callable[[str], None] = logger.info,
    calibration: str | Path | None = None,
) -> Path:
    """Export (or reuse) the IR of ``checkpoint`` (folder or hub id) with ``weights``; returns
    its folder. ``progress`` receives one line per step. ``calibration``: a folder of images to
    calibrate ``int8-act`` on (default: generated scenes)."""
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got '{weights}'")
    if calibration is not None and weights != "int8-act":
        raise ValueError("--calibration is for --weights int8-act (the only format that quantises activations)")
    folder = checkpoint_folder(checkpoint)
    target = Path(output) if output else ir_folder(folder, weights)
    if cached_ir(folder, weights, target, calibration):
        progress(f"OpenVINO IR ({weights}) of '{checkpoint}' is up to date in {target}; reusing it.")
        return target
    started = time.perf_counter()
    pixels = calibration_pixels(folder, calibration) if weights == "int8-act" else []  # a bad folder fails first
    import torch

    from ...checkpoint import load_checkpoint

    progress(f"[1/4] Loading '{checkpoint}' (fp32) from {folder}")
    model, _ = load_checkpoint(str(folder), torch.float32)
    partial = staging_folder(target)
    from .convert import compress_decoder, convert_decoder, convert_image_encoder, quantize_image_encoder, save

    progress("[2/4] Converting the image encoder")
    encoder = convert_image_encoder(model)
    progress("[3/4] Converting the text decoder (stateful KV cache, lm_head inside)")
    decoder = convert_decoder(model)
    del model
    if weights == "int8-act":
        progress("[4/4] Quantising the image encoder (int8 weights and activations), compressing the decoder's weights "
                 "(int8) with NNCF and saving")  # fmt: skip
        encoder = quantize_image_encoder(encoder, pixels)
    else:
        progress(f"[4/4] Compressing weights ({weights}) with NNCF and saving")
    save(encoder, partial / IMAGE_ENCODER)
    save(compress_decoder(decoder, "int8" if weights == "int8-act" else weights), partial / DECODER)
    info = {
        "fingerprint": source_fingerprint(folder, weights, calibration_source(calibration)),
        "checkpoint": str(checkpoint),
        "seconds": round(time.perf_counter() - started, 1),
    }
    publish(partial, target, info)
    progress(f"OpenVINO IR ({weights}) written to {target} in {info['seconds']} s")
    return target


def calibration_pixels(folder: Path, calibration: str | Path | None) -> list:
    """float32 ``pixel_values`` (1, 3, S, S) of the calibration images, prepared as the engine
    prepares images (:func:`~kosmos2_engine.imaging.pixel_values`)."""
    from transformers import AutoProcessor

    from ...imaging import pixel_values
    from .calibration import folder_images, generated_scenes

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True).image_processor
    side = int(json.loads((Path(folder) / "config.json").read_text())["vision_config"].get("image_size", 224))
    images = folder_images(Path(calibration)) if calibration else generated_scenes()
    return [pixel_values(processor, [image], side) for image in images]


def checkpoint_folder(checkpoint: str) -> Path:
    """The local folder of a checkpoint folder or hub id (downloaded first if needed)."""
    if os.path.isdir(checkpoint):
        return Path(checkpoint)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(checkpoint, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: load_checkpoint downloads, or says what to set
        import torch

        from ...checkpoint import load_checkpoint

        load_checkpoint(checkpoint, torch.float32)
    return Path(snapshot_download(checkpoint, local_files_only=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a Kosmos-2 folder or hub id")
    parser.add_argument("--weights", choices=WEIGHT_FORMATS, default="int8")
    parser.add_argument(
        "--output", type=Path, default=None, help="IR folder (default: openvino-<weights> beside the weights)"
    )
    parser.add_argument(
        "--calibration", type=Path, default=None, help="int8-act: a folder of your images to calibrate on"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ...checkpoint import CheckpointError

    try:
        print(export_openvino(args.checkpoint, args.weights, args.output, progress=print, calibration=args.calibration))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CheckpointError as error:  # says what to do; the traceback would only hide it
        print(f"error: {error} (For this command: pass a local folder as the checkpoint.)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
