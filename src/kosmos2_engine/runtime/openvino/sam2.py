"""SAM 2's image encoder as OpenVINO IR, for the masks of the OpenVINO rows (CPU).

The encoder (Hiera and its feature pyramid: ``Sam2Model.get_image_embeddings``) is nearly all of
what a mask costs on a CPU; the prompt encoder and mask decoder, small, stay in torch. The IR is
exported once beside the SAM 2 weights (``openvino-sam2-<format>/``, with the fingerprint of the
weights it was made from) and re-exported when they change. Formats (:data:`SAM2_FORMATS`):
``fp32``; ``int8-act``, int8 weights and activations by NNCF's post-training quantisation,
calibrated on :data:`CALIBRATION_IMAGES` generated scenes (the int8-act row's).

* input ``pixel_values`` float32 (B, 3, S, S), normalised as :func:`~kosmos2_engine.segmentation.sam_pixels`;
* outputs ``image_embeddings.{0,1,2}`` float32, (B, C, S/4, S/4), (B, C', S/8, S/8) and
  (B, C'', S/16, S/16): what ``get_image_embeddings`` returns, the last with SAM 2's
  no-memory embedding added.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...segmentation import sam_pixels, square_side
from .calibration import GENERATED_SOURCE, generated_scenes
from .export import holds_export, ir_folder, publish, source_fingerprint, staging_folder

SAM2_FORMATS = ("fp32", "int8-act")
CALIBRATION_IMAGES = 16  # at 1024 px, about 90 s of calibration on 2 cores; 64 kept no more masks
ENCODER = "image_encoder.xml"
CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}  # masks as torch fp32 gives them


class _ImageEncoderGraph(torch.nn.Module):
    """``get_image_embeddings`` as a module returning a tuple (what conversion needs)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.get_image_embeddings(pixel_values))


def weights_folder(checkpoint: str) -> Path:
    """The local folder of a SAM 2 folder or hub id already in the Hugging Face cache."""
    if os.path.isdir(checkpoint):
        return Path(checkpoint)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(checkpoint, local_files_only=True))


def sam2_encoder_ir(model: Any, folder: Path, fmt: str = "fp32") -> Path:
    """The IR (format ``fmt``) of ``model``'s image encoder for the SAM 2 weights in ``folder``:
    the cached export when its fingerprint matches them, else a new export (seconds for Hiera
    tiny in fp32; with ``int8-act`` the calibration too)."""
    if fmt not in SAM2_FORMATS:
        raise ValueError(f"SAM 2 OpenVINO formats are {', '.join(SAM2_FORMATS)}, not '{fmt}'")
    target = ir_folder(folder, f"sam2-{fmt}")
    fingerprint = source_fingerprint(folder, f"sam2-{fmt}")
    if fmt == "int8-act":
        fingerprint["calibration"] = f"{GENERATED_SOURCE} x {CALIBRATION_IMAGES}"
    if not holds_export(target, (ENCODER,), fingerprint):
        _export(model, target, fingerprint, fmt)
    return target


@torch.inference_mode()
def _export(model: Any, target: Path, fingerprint: dict, fmt: str) -> None:
    import openvino as ov

    from .convert import name_ports, quantize_image_encoder, save

    started = time.perf_counter()
    side = square_side(model.config.vision_config.backbone_config.image_size)
    converted = ov.convert_model(
        _ImageEncoderGraph(model).eval(),
        example_input=torch.zeros(1, 3, side, side),
        input=[ov.PartialShape([-1, 3, side, side])],
    )
    name_ports(converted.inputs, ["pixel_values"])
    name_ports(converted.outputs, [f"image_embeddings.{index}" for index in range(len(converted.outputs))])
    if fmt == "int8-act":
        pixels = [sam_pixels(image, side)[None] for image in generated_scenes(CALIBRATION_IMAGES)]
        converted = quantize_image_encoder(converted, pixels, kept_float=())
    staging = staging_folder(target)
    save(converted, staging / ENCODER)
    publish(staging, target, {"fingerprint": fingerprint, "seconds": round(time.perf_counter() - started, 1)})


class OpenVINOSam2Encoder:
    """SAM 2's image encoder compiled for CPU from an export folder: ``pixel_values`` (B, 3, S, S)
    float32 tensor -> the three embeddings, float32 tensors, as ``get_image_embeddings``."""

    def __init__(self, ir: Path) -> None:
        import openvino as ov

        self.ir = Path(ir)
        self._compiled = ov.Core().compile_model(str(self.ir / ENCODER), "CPU", CPU_CONFIG)

    def __call__(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        outputs = self._compiled(np.ascontiguousarray(pixel_values.cpu().numpy(), dtype=np.float32))
        return [torch.from_numpy(outputs[index].copy()) for index in range(len(self._compiled.outputs))]
