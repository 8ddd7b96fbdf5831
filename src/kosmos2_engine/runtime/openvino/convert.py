"""Torch modules of :mod:`.graphs` to OpenVINO models: tracing, names, the stateful KV cache,
NNCF weight compression. Export time only (needs torch, openvino and nncf)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from ...hf_types import Kosmos2Model
from .graphs import DecoderGraph, ImageEncoderGraph

DECODER_INPUTS = ("input_ids", "image_features", "image_mask", "position_ids", "attention_mask")
INT4_GROUP_SIZE = 64
KEPT_FLOAT = (  # image-encoder ops that int8-act leaves in float32 (regular expressions over op names)
    r".*vision_model\.model\.(embeddings|pre_layrnorm|post_layernorm)[./].*",
    r".*vision_model\.model\.encoder\.layers\.0\..*",
    r".*image_to_text_projection.*",
)


def name_ports(ports: Sequence[Any], names: Sequence[str]) -> None:
    """Give each port of ``ports`` its name of ``names``, in order."""
    for port, name in zip(ports, names):
        port.get_tensor().set_names({name})


@torch.inference_mode()
def convert_image_encoder(model: Kosmos2Model) -> ov.Model:
    """``pixel_values`` (B, 3, S, S) float32 -> ``image_embeds`` (B, 64, E), B dynamic."""
    side = int(model.config.vision_config.image_size)
    example = torch.zeros(2, 3, side, side)
    converted = ov.convert_model(
        ImageEncoderGraph(model).eval(), example_input=example, input=[ov.PartialShape([-1, 3, side, side])]
    )
    name_ports(converted.inputs, ["pixel_values"])
    name_ports(converted.outputs, ["image_embeds"])
    return converted


def decoder_state_names(layers: int) -> dict[str, str]:
    """Past input name -> present output name, per layer, key then value."""
    return {f"past_key_values.{i}.{kind}": f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")}


@torch.inference_mode()
def convert_decoder(model: Kosmos2Model) -> ov.Model:
    """The :class:`DecoderGraph` with every ``past_key_values.*`` input folded into OpenVINO
    state fed by the matching ``present.*`` output; a state starts empty, (B, heads, 0,
    head_dim) for the batch of the first call after a reset."""
    graph = DecoderGraph(model).eval()
    layers, width = len(graph.text.layers), int(model.config.text_config.embed_dim)
    batch, new, past = 2, 3, 2
    past_shape = (batch, graph.heads, past, graph.head_dim)
    positions = torch.full((batch, new), int(model.config.text_config.pad_token_id) + 3, dtype=torch.long)
    example = (
        torch.ones(batch, new, dtype=torch.long),
        torch.zeros(batch, new, width),
        torch.zeros(batch, new),
        positions,
        torch.ones(batch, past + new, dtype=torch.long),
        *[torch.zeros(past_shape) for _ in range(2 * layers)],
    )
    states = decoder_state_names(layers)
    shapes = [[-1, -1], [-1, -1, width], [-1, -1], [-1, -1], [-1, -1]]
    shapes += [[-1, graph.heads, -1, graph.head_dim]] * (2 * layers)
    converted = ov.convert_model(graph, example_input=example, input=[ov.PartialShape(s) for s in shapes])
    name_ports(converted.inputs, [*DECODER_INPUTS, *states])
    name_ports(converted.outputs, ["logits", *states.values()])
    from openvino._offline_transformations import apply_make_stateful_transformation

    apply_make_stateful_transformation(converted, states)
    _start_states_empty(converted, graph.heads, graph.head_dim)
    return converted


def _start_states_empty(model: ov.Model, heads: int, head_dim: int) -> None:
    """Give every ReadValue (KV state) an initial value of zeros shaped (B, heads, 0,
    head_dim), B read from ``input_ids``: without it a dynamic-batch state starts with batch 0."""
    import openvino.opset13 as ops

    batch = ops.gather(
        ops.shape_of(model.input("input_ids"), output_type="i64"),
        ops.constant(np.array([0], dtype=np.int64)),
        ops.constant(np.int64(0)),
    )
    fixed = ops.constant(np.array([heads, 0, head_dim], dtype=np.int64))
    shape = ops.concat([batch, fixed], axis=0)
    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            zeros = ops.broadcast(ops.constant(np.float32(0)), shape)
            op.set_arguments([zeros])
    model.validate_nodes_and_infer_types()


def compress_decoder(model: ov.Model, weights: str) -> ov.Model:
    """NNCF weight compression of the text decoder: ``int8`` INT8_ASYM on every linear and
    embedding layer; ``int4`` INT4_ASYM in groups of 64 on the linear layers (NNCF keeps the
    embeddings and ``lm_head`` INT8); ``fp32`` none. The image encoder is never compressed: it
    is compute-bound (int8 weights would not speed it up) and, on the tiny test model, its int8
    weights moved boxes by up to 3 location bins where the decoder's moved none."""
    if weights == "fp32":
        return model
    import nncf

    if weights == "int4":
        return nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=INT4_GROUP_SIZE, ratio=1.0
        )
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def quantize_image_encoder(
    model: ov.Model, calibration: list[np.ndarray], kept_float: Sequence[str] = KEPT_FLOAT
) -> ov.Model:
    """NNCF post-training quantisation of an image encoder: int8 weights and int8 activations
    (the transformer preset, SmoothQuant), statistics from ``calibration``, a list of float32
    ``pixel_values`` (1, 3, S, S); the ops whose names match ``kept_float`` stay float32.

    Kosmos-2's (:data:`KEPT_FLOAT`): the patch embeddings, the first encoder layer, the layer
    norms around the encoder and the resampler. Quantising them too kept only 90% of the tiny
    test model's boxes within one location bin of fp32 (96.5% with them kept), and on the real
    model they are about a twentieth of the encoder's work. SAM 2's encoder keeps none."""
    import nncf

    return nncf.quantize(
        model,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=list(kept_float), validate=False) if kept_float else None,
    )


def save(model: ov.Model, path: Path) -> None:
    ov.save_model(model, str(path), compress_to_fp16=False)
