"""Which engine a deploy gets: the torch engine, or the OpenVINO engine with int8, int4 or fp32
weights, or int8 with int8 image-encoder activations (``int8-act``). A ``models.json`` row names
its backend in ``meta.backend`` (the SDK's runtime selector knows only PyTorch, ONNXRuntime and
TensorRT, so each OpenVINO variant is a model row); ``KOSMOS2_BACKEND`` overrides it for local
runs."""

from __future__ import annotations

from kosmos2_engine import Kosmos2Engine, load_openvino_engine

from .config import BACKEND_ENV, ServingOptions, backend_override

PYTORCH = "pytorch"
OPENVINO_PREFIX = "openvino-"
BACKENDS = (PYTORCH, "openvino-int8", "openvino-int4", "openvino-fp32", "openvino-int8-act")


def backend_of(model_info: dict | None) -> str:
    """``KOSMOS2_BACKEND`` if set, else the row's ``meta.backend``, else ``pytorch``; checked."""
    backend, source = backend_override(), BACKEND_ENV
    if not backend:
        backend = ((model_info or {}).get("meta") or {}).get("backend") or PYTORCH
        source = "meta.backend of the model row"
    if backend not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}, got '{backend}'")
    return backend


def check_backend_device(backend: str, device: str) -> None:
    """``ValueError`` when ``backend`` cannot run on ``device`` (OpenVINO runs on CPU only)."""
    if backend != PYTORCH and not device.startswith("cpu"):
        raise ValueError(f"The OpenVINO variants run on CPU; deploy '{backend}' with device 'cpu', not '{device}'.")


def load_engine(checkpoint: str, backend: str, device: str, options: ServingOptions) -> Kosmos2Engine:
    """A loaded engine. An OpenVINO backend runs on CPU only, and exports its IR beside the
    weights first if there is none for this checkpoint yet (minutes for the real model)."""
    check_backend_device(backend, device)
    if backend == PYTORCH:
        return Kosmos2Engine.load(
            checkpoint, device=device, max_batch_size=options.max_batch_size, compile_decoder=options.compile_decoder
        )
    return load_openvino_engine(checkpoint, backend[len(OPENVINO_PREFIX) :], options.max_batch_size)


def load_warm_engine(checkpoint: str, backend: str, device: str, max_batch_size: int) -> Kosmos2Engine:
    """An engine for a job that calls it from one thread (a labelling actor, an evaluation):
    loaded (decoder compiled on GPU) and warmed up."""
    options = ServingOptions(max_batch_size, 0.0, device.startswith("cuda"))
    engine = load_engine(checkpoint, backend, device, options)
    engine.warm_up()
    return engine
