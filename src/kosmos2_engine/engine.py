"""Kosmos-2 inference: encode images once, then decode any number of prompts against them.

The expensive part (the CLIP vision tower and the resampler) runs once per image in
:meth:`Kosmos2Engine.encode_images`; prompts are then decoded against those embeddings,
greedily, in length-sorted, left-padded batches. The network runs in a
:class:`~kosmos2_engine.runtime.protocol.Backend` (PyTorch or OpenVINO); this engine owns everything
around it: preprocessing, prompt planning and checks (by the task table), batching, parsing,
ranking. :meth:`Kosmos2Engine.execute` runs several requests as one piece of work (the
cross-request batcher uses it). Knows nothing of Supervisely.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .canary import (
    CANARY_PHRASES,
    CANARY_PROMPTS,
    MIN_SHARE_WITHIN_ONE_BIN,
    DecoderStatus,
    canary_image,
    first_difference,
    share_within_one_bin,
)
from .checkpoint import load_checkpoint
from .decode_batches import length_sorted_batches, run_splitting_on_oom
from .devices import check_device, default_dtype
from .grounding import GroundedText
from .hf_types import Kosmos2ModelConfig
from .imaging import ImageInput, parallel_map, pixel_values, size_of, split_evenly
from .outputs import Generation, TaskResult, assemble, stop_token_ids, to_generation, until_stop
from .prompts import EncodedPrompt, encode_prompt
from .ranking import rank_boxes
from .runtime.protocol import Backend
from .runtime.torch.backend import TorchBackend
from .tasks import GenerationPolicy, PromptJob, ResultKind, plan_jobs
from .validation import SettingsError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRun:
    """One request, checked, planned and preprocessed, before any model work: its images'
    ``pixels`` (n, 3, S, S) float32, its policy, one :class:`PromptJob` per prompt and that
    prompt's encoding."""

    pixels: np.ndarray
    policy: GenerationPolicy
    jobs: tuple[PromptJob, ...]
    encoded: tuple[EncodedPrompt, ...]

    @property
    def image_count(self) -> int:
        return len(self.pixels)


@dataclass(frozen=True)
class _DecodeItem:
    """Prompt ``job`` of prepared run ``run``, to decode against embedding row ``row``."""

    run: int
    job: int
    row: int


class Kosmos2Engine:
    """Kosmos-2 on one device. Thread-safe: a lock serialises work on the backend.

    Args:
        backend: the network (:class:`~kosmos2_engine.runtime.torch.backend.TorchBackend` or
            :class:`~kosmos2_engine.runtime.openvino.backend.OpenVINOBackend`).
        processor: the checkpoint's ``Kosmos2Processor`` (image preprocessing, tokenizer).
        config: the checkpoint's ``Kosmos2Config``.
        max_batch_size: most prompts decoded (and images encoded) in one batch.
    """

    def __init__(self, backend: Backend, processor: Any, config: Kosmos2ModelConfig, max_batch_size: int = 16) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.backend = backend
        self.processor, self.tokenizer, self.config = processor, processor.tokenizer, config
        self.max_batch_size = max_batch_size
        self.tokens_generated = 0  # every token decoded so far (for metrics)
        self.decoder_status = DecoderStatus("compiled" if backend.compiled else "eager")  # settled by warm_up()
        self._lock = threading.RLock()
        # Prompts repeat (every caption request sends the same one): tokenize each text once.
        self._encoded = functools.lru_cache(maxsize=4096)(lambda text: encode_prompt(self.tokenizer, text))

    @classmethod
    def load(
        cls,
        checkpoint: str,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        max_batch_size: int = 16,
        compile_decoder: bool | None = None,
    ) -> Kosmos2Engine:
        """The PyTorch backend from a folder or hub id (see :mod:`.checkpoint`), in ``dtype``
        (default: bf16 or fp16 on CUDA, fp32 on CPU)."""
        check_device(device)
        model, processor = load_checkpoint(checkpoint, dtype or default_dtype(device))
        return cls(TorchBackend(model, device, compile_decoder), processor, model.config, max_batch_size)

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def image_size(self) -> int:
        return int(self.config.vision_config.image_size)

    def to(self, device: str, compile_decoder: bool | None = None) -> Kosmos2Engine:
        """Move the backend to ``device`` in place (decoding compiled per ``compile_decoder``,
        None: on CUDA only); waits for the work in progress."""
        check_device(device)
        with self._lock:
            self.backend.to(device, compile_decoder)
        return self

    def encode_images(self, images: Sequence[ImageInput]) -> Any:
        """Image embeddings (B, 64, text hidden size), the backend's own type.

        ``images`` are RGB ``uint8`` arrays (H, W, 3) (grey and RGBA are converted) or PIL
        images of any size; each is squashed to a square (no crop), as Kosmos-2 was trained.
        """
        return self.encode_pixels(self.preprocess(images))

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """``pixel_values`` (n, 3, S, S) float32 of the images, by the checkpoint's own image
        processor: each squashed to the model's square size (no crop), transparency
        composited onto white. No model work and no lock: any thread may call it."""

        def pixels(part: Sequence[ImageInput]) -> np.ndarray:
            return pixel_values(self.processor.image_processor, part, self.image_size)

        return np.concatenate(parallel_map(pixels, split_evenly(list(images), os.cpu_count() or 1)))

    def encode_pixels(self, pixels: np.ndarray) -> Any:
        """Image embeddings of ``pixels`` (n, 3, S, S), in chunks of ``max_batch_size`` images."""
        chunks = [pixels[start : start + self.max_batch_size] for start in range(0, len(pixels), self.max_batch_size)]
        with self._lock:
            return self.backend.encode_images(chunks)

    def generate(
        self,
        image_embeds: Any,
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
        """Plan, check and preprocess a request without touching the model: regions against
        image sizes, prompt lengths against the context (raises
        :class:`~kosmos2_engine.validation.SettingsError`), then the pixels. Runs in the
        caller's thread, so that the engine's own thread only runs the network."""
        jobs = tuple(plan_jobs(policy, [size_of(image) for image in images]))
        encoded = tuple(self._encode_prompt(job.prompt.text, policy) for job in jobs)
        return PreparedRun(self.preprocess(images), policy, jobs, encoded)

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
        embeds = self.encode_pixels(np.concatenate([run.pixels for run in runs]))
        first_rows = np.cumsum([0] + [run.image_count for run in runs]).tolist()
        views: list[list[GroundedText | None]] = [[None] * len(run.jobs) for run in runs]
        groups: dict[tuple, list[_DecodeItem]] = {}
        for r, run in enumerate(runs):
            items = [_DecodeItem(r, j, first_rows[r] + job.image) for j, job in enumerate(run.jobs)]
            if run.policy.ranks_boxes:
                views[r] = [self._rank(embeds, run, item) for item in items]
                continue
            key = (run.policy.max_new_tokens, stop_token_ids(self.tokenizer, run.policy))
            groups.setdefault(key, []).extend(items)
        for items in groups.values():
            self._decode_items(embeds, runs, items, views)
        return [assemble(run.policy, run.jobs, _decoded(views[r]), run.image_count) for r, run in enumerate(runs)]

    def _decode_items(self, embeds, runs, items: list[_DecodeItem], views) -> None:
        """Decode ``items`` (same length limit and stops) as one workload; fill ``views``."""
        policy = runs[items[0].run].policy
        encoded = [runs[item.run].encoded[item.job] for item in items]
        decoded = self._decode(embeds, encoded, [item.row for item in items], policy)
        for item, prompt, (ids, probs) in zip(items, encoded, decoded):
            run_policy = runs[item.run].policy
            generation = to_generation(self.tokenizer, prompt, ids, probs, run_policy)
            views[item.run][item.job] = generation.answer if run_policy.row.answer_only else generation.grounded

    def _rank(self, embeds, run: PreparedRun, item: _DecodeItem) -> GroundedText:
        """The top-k boxes of one grounding prompt, from location-token probabilities."""
        job = run.jobs[item.job]

        def next_token_probs(prompts):
            return self.backend.next_token_probs(embeds, prompts, item.row)

        return rank_boxes(next_token_probs, self.tokenizer, job.prompt.text, job.prompt.name or "", run.policy)

    def generate_texts(self, images: Sequence[ImageInput], policy: GenerationPolicy) -> list[Generation]:
        """The :class:`~kosmos2_engine.outputs.Generation` of a task with one prompt per image
        and text as its result (caption, detailed caption, vqa, custom), for every image: one
        vision pass per image, batched decoding."""
        if policy.row.result != ResultKind.GROUNDED_TEXT:
            raise ValueError(f"generate_texts() runs tasks with one prompt per image, not '{policy.task}'")
        jobs = plan_jobs(policy, [size_of(image) for image in images])
        with self._lock:
            return self.generate(self.encode_images(images), [job.prompt.text for job in jobs], policy)

    def warm_up(self, checks: bool = True) -> None:
        """Make the first request pay no start-up cost: with compiled decoding, one full-length
        batch per batch size to record (compiles and records the graphs), then the canary
        (:mod:`.canary`) decoded compiled and eagerly; then one short caption. If compilation
        fails, or the compiled canary's tokens differ from eager ones, say why once and decode
        eagerly (same tokens, slower); :attr:`decoder_status` says which.

        ``checks=False`` skips the canary's two checks (compiled against eager, half precision
        against fp32): only for benchmarks on random weights, whose near-tied logits make any
        two numerics pick other tokens, so that they measure the path a real checkpoint keeps."""
        started = time.perf_counter()
        blank = np.full((self.image_size, self.image_size, 3), 127, dtype=np.uint8)
        dtype_detail = self._half_precision_check() if checks else ""
        sizes = self.backend.batch_sizes_to_record(self.max_batch_size)
        self.decoder_status = DecoderStatus("compiled" if sizes else "eager", dtype_detail=dtype_detail)
        if sizes:
            try:
                self._record_graphs(blank, sizes)
                difference = self._canary_difference() if checks else None
            except Exception as error:  # noqa: BLE001 - any compiler failure: serve eagerly
                self._decode_eagerly(
                    "compile_failed", f"compiling the decode step failed: {type(error).__name__}: {error}"
                )
            else:
                if difference is not None:
                    prompt, token = difference
                    self._decode_eagerly(
                        "canary_mismatch",
                        f"compiled decoding gave other tokens than eager decoding on the warm-up canary "
                        f"(prompt {CANARY_PROMPTS[prompt]!r}, from token {token})",
                    )
        self.generate_texts([blank], GenerationPolicy(max_new_tokens=2))
        logger.info(
            "Kosmos-2 warmed up on %s (%s%s, %d torch threads, batches of up to %d) in %.1f s; decoder %s.",
            self.device,
            str(self.dtype).replace("torch.", ""),
            f", {self.backend.weights} weights" if self.backend.weights else "",
            torch.get_num_threads(),
            self.max_batch_size,
            time.perf_counter() - started,
            self.decoder_status.describe(),
        )

    def _decode_eagerly(self, fallback: str, detail: str) -> None:
        logger.warning(
            "%s; decoding eagerly instead. Set KOSMOS2_COMPILE=0 to skip the attempt.", detail[:1].upper() + detail[1:]
        )
        self.backend.decode_eagerly()
        self.decoder_status = DecoderStatus("eager", fallback, detail, self.decoder_status.dtype_detail)

    def _half_precision_check(self) -> str:
        """A bf16 / fp16 torch engine grounds the canary's phrases, then again with its weights
        cast to fp32; when under 95% of box corners stay within one location cell, it says so once
        and keeps fp32 (why, returned; "" when it stays in half precision or was fp32)."""
        if not isinstance(self.backend, TorchBackend) or self.dtype == torch.float32:
            return ""
        half, compiled, backend = self.dtype, self.backend.compiled, self.backend
        image = canary_image(self.image_size)
        policy = GenerationPolicy(task="phrase_grounding", phrases=CANARY_PHRASES)
        with self._lock:  # eager for the check: nothing compiled twice
            backend.set_dtype(half, compile_decoder=False)
            ours = self.run([image], policy)
            backend.set_dtype(torch.float32, compile_decoder=False)
            share = share_within_one_bin(ours, self.run([image], policy))
            kept = half if share >= MIN_SHARE_WITHIN_ONE_BIN else torch.float32
            backend.set_dtype(kept, compile_decoder=compiled)
        if kept == half:
            return ""
        name = str(half).replace("torch.", "")
        detail = (
            f"{name} boxes of the warm-up canary: {share:.0%} of corners within one location cell of float32's "
            f"(at least {MIN_SHARE_WITHIN_ONE_BIN:.0%} needed)"
        )
        logger.warning("%s; running in float32 instead (twice the memory, slower).", detail[:1].upper() + detail[1:])
        return detail

    def _canary_difference(self) -> tuple[int, int] | None:
        """(prompt, token) where compiled decoding of the canary first differs from eager, or None."""
        if not isinstance(self.backend, TorchBackend):  # only the torch backend compiles
            return None
        policy = GenerationPolicy()
        embeds = self.encode_images([canary_image(self.image_size)])
        prompts = [self._encode_prompt(text, policy) for text in CANARY_PROMPTS]
        with self._lock:
            return first_difference(self.backend, embeds, prompts, stop_token_ids(self.tokenizer, policy))

    def _record_graphs(self, image, sizes: list[int]) -> None:
        """Decode once per batch size at the default caption length."""
        embeds = self.encode_images([image])
        policy = GenerationPolicy()
        prompt = self._encode_prompt(plan_jobs(policy, [(1, 1)])[0].prompt.text, policy)
        for size in sizes:
            with self._lock:
                self.backend.decode(embeds, [prompt] * size, policy.max_new_tokens, (), [0] * size)

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
                out = self.backend.decode(
                    image_embeds[images],
                    [encoded[i] for i in indices],
                    policy.max_new_tokens,
                    stops,
                    [row_of[rows[i]] for i in indices],
                )
            return [until_stop(ids, probs, stops) for ids, probs in zip(out.tokens.tolist(), out.probs.tolist())]

        for batch in length_sorted_batches([len(p.ids) for p in encoded], self.max_batch_size):
            for index, result in zip(batch, run_splitting_on_oom(decode_batch, batch)):
                results[index] = result
        self.tokens_generated += sum(len(ids) for ids, _ in results)
        return results

    def _encode_prompt(self, prompt: str, policy: GenerationPolicy) -> EncodedPrompt:
        encoded = self._encoded(prompt)
        limit = int(self.config.text_config.max_position_embeddings)
        if len(encoded.ids) + policy.max_new_tokens > limit:
            raise SettingsError(
                "max_new_tokens",
                f"the prompt takes {len(encoded.ids)} tokens (image included) and the model's "
                f"context is {limit}; max_new_tokens must be at most {limit - len(encoded.ids)}",
            )
        return encoded


def _decoded(views: list[GroundedText | None]) -> list[GroundedText]:
    """Every job's view, once all are decoded (a missing one is a bug, not a user error)."""
    if any(view is None for view in views):
        raise RuntimeError("a prompt of the run was not decoded")
    return [view for view in views if view is not None]
