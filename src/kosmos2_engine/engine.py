"""Kosmos-2 inference: encode images once, then decode any number of prompts against them.

The expensive part (the CLIP vision tower and the resampler) runs once per image in
:meth:`Kosmos2Engine.encode_images`; prompts are then decoded against those embeddings by
our static-cache decoder (:mod:`.decoder`), greedily, in length-sorted, left-padded batches.
:meth:`Kosmos2Engine.execute` runs several requests as one piece of work (the cross-request
batcher uses it). Knows nothing of Supervisely.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .batching import length_sorted_batches, run_splitting_on_oom
from .checkpoint import default_dtype, load_checkpoint
from .decoder import BATCH_BUCKETS, StaticDecoder
from .generation import Generation, stop_token_ids, to_generation, until_stop
from .grounding import GroundedText
from .policy import TEXT_TASKS, GenerationPolicy, SettingsError
from .prompts import EncodedPrompt, encode_prompt
from .ranking import hf_next_token_probs, rank_boxes
from .tasks import ANSWER_TASKS, PromptJob, TaskResult, assemble, plan_jobs

logger = logging.getLogger(__name__)

ImageInput = np.ndarray | Image.Image


@dataclass(frozen=True)
class PreparedRun:
    """One request, checked and planned, before any model work: its images, its policy, one
    :class:`PromptJob` per prompt and that prompt's encoding."""

    images: Sequence[ImageInput]
    policy: GenerationPolicy
    jobs: tuple[PromptJob, ...]
    encoded: tuple[EncodedPrompt, ...]


@dataclass(frozen=True)
class _DecodeItem:
    """Prompt ``job`` of prepared run ``run``, to decode against embedding row ``row``."""

    run: int
    job: int
    row: int


class Kosmos2Engine:
    """A loaded Kosmos-2 model and processor on one device. Thread-safe: a lock serialises work.

    Args:
        model: a ``Kosmos2ForConditionalGeneration`` in eval mode.
        processor: its ``Kosmos2Processor``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        max_batch_size: most prompts decoded (and images encoded) in one batch.
        compile_decoder: run the decoder's one-token step under ``torch.compile`` with CUDA
            graphs; ``None`` means on CUDA only.
    """

    def __init__(
        self, model, processor, device: str = "cpu", max_batch_size: int = 16, compile_decoder: bool | None = None
    ):
        self._set_up(processor, model.config, device, max_batch_size, compile_decoder)
        self.model = model
        self.model.to(device)
        self.decoder = self._new_decoder()

    def _set_up(self, processor, config, device: str, max_batch_size: int, compile_decoder: bool | None) -> None:
        """What every engine holds besides its model and decoder."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.processor, self.tokenizer, self.config = processor, processor.tokenizer, config
        self.max_batch_size = max_batch_size
        self.compile_decoder = compile_decoder
        self.device = device
        self._lock = threading.RLock()

    @classmethod
    def load(
        cls,
        checkpoint: str,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        max_batch_size: int = 16,
        compile_decoder: bool | None = None,
    ) -> Kosmos2Engine:
        """Load from a folder or hub id (see :mod:`.checkpoint`), in ``dtype`` (default: bf16 or
        fp16 on CUDA, fp32 on CPU)."""
        check_device(device)
        model, processor = load_checkpoint(checkpoint, dtype or default_dtype(device))
        return cls(model, processor, device, max_batch_size, compile_decoder)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def image_size(self) -> int:
        return int(self.config.vision_config.image_size)

    def to(self, device: str, dtype: torch.dtype | None = None) -> Kosmos2Engine:
        """Move the model to ``device`` (and ``dtype``, default for that device) in place; the
        decoder's caches (and compiled graphs) are rebuilt for it."""
        check_device(device)
        with self._lock:
            self.decoder.release_caches()
            self.model.to(device=device, dtype=dtype or default_dtype(device))
            self.device = device
            self.decoder = self._new_decoder()
        return self

    @torch.inference_mode()
    def encode_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Image embeddings, (B, 64, text hidden size), in the model's dtype on its device.

        ``images`` are RGB ``uint8`` arrays (H, W, 3) (grey and RGBA are converted) or PIL
        images of any size; each is squashed to a square (no crop), as Kosmos-2 was trained.
        Runs in chunks of ``max_batch_size`` images.
        """
        chunks = []
        for pixels in self._pixel_chunks(images, "pt"):
            with self._lock:
                chunks.append(image_embeddings(self.model, pixels.to(self.device, self.dtype)))
        return torch.cat(chunks)

    def _pixel_chunks(self, images: Sequence[ImageInput], tensors: str):
        """``pixel_values`` (n, 3, S, S) of ``max_batch_size`` images at a time, as ``tensors``
        ("pt" or "np"): each image squashed to the model's square size, no crop."""
        side = self.image_size
        for start in range(0, len(images), self.max_batch_size):
            yield self.processor.image_processor(
                [_to_rgb(image) for image in images[start : start + self.max_batch_size]],
                return_tensors=tensors,
                size={"height": side, "width": side},
                do_center_crop=False,
            )["pixel_values"]

    def generate(
        self,
        image_embeds: torch.Tensor,
        prompts: Sequence[str],
        policy: GenerationPolicy,
        image_rows: Sequence[int] | None = None,
    ) -> list[Generation]:
        """Decode ``prompts[i]`` against image ``image_rows[i]`` of ``image_embeds``.

        ``image_rows`` defaults to ``0..len(prompts)-1``. Greedy, at most
        ``policy.max_new_tokens`` tokens, stopping at the policy's stop tokens; boxes below
        ``policy.confidence_threshold`` are dropped. Results keep the order of ``prompts``.
        """
        rows = list(range(len(prompts))) if image_rows is None else list(image_rows)
        if len(rows) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(rows)} image rows")
        encoded = [self._encode_prompt(prompt, policy) for prompt in prompts]
        decoded = self._decode(image_embeds, encoded, rows, policy)
        return [to_generation(self.tokenizer, p, ids, probs, policy) for p, (ids, probs) in zip(encoded, decoded)]

    def prepare(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> PreparedRun:
        """Plan and check a request without touching the model: regions against image sizes,
        prompt lengths against the context. Raises :class:`SettingsError`."""
        jobs = tuple(plan_jobs(policy, [_size(image) for image in images]))
        encoded = tuple(self._encode_prompt(job.prompt, policy) for job in jobs)
        return PreparedRun(images, policy, jobs, encoded)

    def run(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> list[TaskResult]:
        """Run ``policy``'s task on every image: one vision pass per image, then every prompt
        of the task (one per phrase, per region …) decoded in batches against it."""
        return self.execute([self.prepare(images, policy)])[0]

    def execute(self, runs: Sequence[PreparedRun]) -> list[list[TaskResult]]:
        """Run prepared requests together: one vision pass over all their images; prompts that
        share a decoding setup (length limit, stop tokens) share batches across requests.
        Returns per run one :class:`TaskResult` per image. Holds the engine's lock throughout,
        so that :meth:`to` (the SDK's idle freeze) waits for a run instead of moving its weights."""
        with self._lock:
            return self._execute(runs)

    def _execute(self, runs: Sequence[PreparedRun]) -> list[list[TaskResult]]:
        embeds = self.encode_images([image for run in runs for image in run.images])
        first_rows = np.cumsum([0] + [len(run.images) for run in runs]).tolist()
        views: list[list[GroundedText | None]] = [[None] * len(run.jobs) for run in runs]
        groups: dict[tuple, list[_DecodeItem]] = {}
        for r, run in enumerate(runs):
            items = [_DecodeItem(r, j, first_rows[r] + job.image) for j, job in enumerate(run.jobs)]
            if _ranks_boxes(run.policy):
                views[r] = self._rank(embeds, run, items)
                continue
            key = (run.policy.max_new_tokens, stop_token_ids(self.tokenizer, run.policy))
            groups.setdefault(key, []).extend(items)
        for items in groups.values():
            self._decode_items(embeds, runs, items, views)
        return [assemble(run.policy, run.jobs, views[r], len(run.images)) for r, run in enumerate(runs)]

    def _decode_items(self, embeds, runs, items: list[_DecodeItem], views) -> None:
        """Decode ``items`` (same length limit and stops) as one workload; fill ``views``."""
        policy = runs[items[0].run].policy
        encoded = [runs[item.run].encoded[item.job] for item in items]
        decoded = self._decode(embeds, encoded, [item.row for item in items], policy)
        for item, prompt, (ids, probs) in zip(items, encoded, decoded):
            run_policy = runs[item.run].policy
            generation = to_generation(self.tokenizer, prompt, ids, probs, run_policy)
            answer_only = run_policy.task in ANSWER_TASKS
            views[item.run][item.job] = generation.answer if answer_only else generation.grounded

    def _rank(self, embeds, run: PreparedRun, items: list[_DecodeItem]) -> list[GroundedText]:
        with self._lock:
            return [
                rank_boxes(
                    self._next_token_probs(embeds, item.row),
                    self.tokenizer,
                    run.jobs[item.job].prompt,
                    run.jobs[item.job].name,
                    run.policy,
                )
                for item in items
            ]

    def _next_token_probs(self, embeds, row: int):
        """``prompts -> (R, vocab) softmax`` against image ``row`` of ``embeds`` (for ranking)."""
        return lambda prompts: hf_next_token_probs(self.model, embeds[row : row + 1], prompts)

    def caption(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> list[Generation]:
        """The :class:`Generation` of a one-prompt-per-image task (caption, detailed caption,
        vqa, custom) for every image: one vision pass per image, batched decoding."""
        if policy.task not in TEXT_TASKS:
            raise ValueError(f"caption() runs one-prompt tasks {TEXT_TASKS}, not '{policy.task}'")
        jobs = plan_jobs(policy, [_size(image) for image in images])
        with self._lock:
            return self.generate(self.encode_images(images), [job.prompt for job in jobs], policy)

    def warm_up(self) -> None:
        """Make the first request pay no start-up cost: with a compiled decoder, one full-length
        batch per batch-size bucket (compiles and records the graphs); then one short caption.
        If compilation fails, say why once and decode eagerly (same tokens, slower)."""
        started = time.perf_counter()
        blank = np.full((self.image_size, self.image_size, 3), 127, dtype=np.uint8)
        if self.decoder.compiled:
            try:
                self._record_graphs(blank)
            except Exception as error:  # noqa: BLE001 - any compiler failure: serve eagerly
                logger.warning(
                    "Compiling the decode step failed (%s: %s); decoding eagerly instead. "
                    "Set KOSMOS2_COMPILE=0 to skip the attempt.",
                    type(error).__name__,
                    error,
                )
                self.compile_decoder = False
                self.decoder = self._new_decoder()
        self.caption([blank], GenerationPolicy(max_new_tokens=2))
        logger.info(
            "Kosmos-2 warmed up on %s (%s, %d torch threads, batches of up to %d) in %.1f s; decoder %s.",
            self.device,
            str(self.dtype).replace("torch.", ""),
            torch.get_num_threads(),
            self.max_batch_size,
            time.perf_counter() - started,
            "compiled (CUDA graphs)" if self.decoder.compiled else "eager",
        )

    def _record_graphs(self, image) -> None:
        """Run the compiled decoder once per batch bucket at the default caption length."""
        embeds = self.encode_images([image])
        policy = GenerationPolicy()
        prompt = self._encode_prompt(plan_jobs(policy, [(1, 1)])[0].prompt, policy)
        for size in [b for b in BATCH_BUCKETS if b <= self.decoder.bucket(self.max_batch_size)]:
            with self._lock:
                self.decoder.decode(embeds, [prompt] * size, policy.max_new_tokens, stop_ids=(), image_rows=[0] * size)

    def _decode(
        self, image_embeds, encoded: Sequence[EncodedPrompt], rows: Sequence[int], policy: GenerationPolicy
    ) -> list[tuple[list[int], list[float]]]:
        """Greedy ids and probabilities per prompt, cut at the first stop token; batches sorted
        by prompt length, halved on out-of-memory."""
        stops = stop_token_ids(self.tokenizer, policy)
        results: list = [None] * len(encoded)

        def decode_batch(indices: list[int]) -> list[tuple[list[int], list[float]]]:
            images = sorted({rows[i] for i in indices})  # each image's prefix runs once
            row_of = {image: row for row, image in enumerate(images)}
            with self._lock:
                out = self.decoder.decode(
                    image_embeds[images],
                    [encoded[i] for i in indices],
                    policy.max_new_tokens,
                    stops,
                    image_rows=[row_of[rows[i]] for i in indices],
                )
            return [until_stop(ids, probs, stops) for ids, probs in zip(out.tokens.tolist(), out.probs.tolist())]

        for batch in length_sorted_batches([len(p.ids) for p in encoded], self.max_batch_size):
            for index, result in zip(batch, run_splitting_on_oom(decode_batch, batch)):
                results[index] = result
        return results

    def _encode_prompt(self, prompt: str, policy: GenerationPolicy) -> EncodedPrompt:
        encoded = encode_prompt(self.tokenizer, prompt)
        limit = int(self.config.text_config.max_position_embeddings)
        if len(encoded.ids) + policy.max_new_tokens > limit:
            raise SettingsError(
                "max_new_tokens",
                f"the prompt takes {len(encoded.ids)} tokens (image included) and the model's "
                f"context is {limit}; max_new_tokens must be at most {limit - len(encoded.ids)}",
            )
        return encoded

    def _new_decoder(self) -> StaticDecoder:
        compile_step = self.compile_decoder
        if compile_step is None:
            compile_step = self.device.startswith("cuda")
        return StaticDecoder(self.model, compile_step=compile_step)


def image_embeddings(model, pixels: torch.Tensor) -> torch.Tensor:
    """Kosmos-2's image embeddings (B, 64, E) of ``pixels`` (B, 3, S, S): vision tower,
    post-layernorm, L2 normalisation, resampler projection."""
    hidden = model.vision_model(pixel_values=pixels)[0]
    hidden = torch.nn.functional.normalize(model.vision_model.model.post_layernorm(hidden), dim=-1)
    return model.image_to_text_projection(hidden)[0]


def _ranks_boxes(policy: GenerationPolicy) -> bool:
    return policy.task == "referring_expression" and policy.top_k > 1


def _size(image: ImageInput) -> tuple[int, int]:
    """(width, height) of an (H, W, C) array or a PIL image."""
    return (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size


def _to_rgb(image: ImageInput) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def available_devices() -> list[str]:
    """The devices of this machine an engine can use: ``cpu``, then ``cuda:0`` … ``cuda:N-1``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{index}" for index in range(count))]


def default_device() -> str:
    """``cuda:0`` where CUDA is available, else ``cpu``."""
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """``ValueError`` unless ``device`` is a CPU or CUDA device of this machine (``cpu``,
    ``cpu:0``, ``cuda``, ``cuda:N`` with N below the device count)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda") or (parsed.type == "cpu" and parsed.index not in (None, 0)):
        raise ValueError(f"Unknown device '{device}': use 'cpu', 'cuda' or 'cuda:N'.")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device '{device}' was asked for but CUDA is not available; use 'cpu'.")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"Device '{device}' is not on this machine: it has {torch.cuda.device_count()} CUDA device(s)."
        )
