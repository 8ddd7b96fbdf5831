"""A benchmark report: JSON (everything) and Markdown (the summary), under bench/results/."""

from __future__ import annotations

import json
import re
from pathlib import Path


def slug_of(report: dict) -> str:
    """``<date>-<device name>``, lower case, dashes: the report's file name without suffix."""
    env = report["environment"]
    return re.sub(r"[^a-z0-9]+", "-", f"{env['date'][:10]}-{env['device_name']}".lower()).strip("-")


def write_partial(report: dict, folder: Path) -> Path:
    """Write what ``report`` holds so far as ``<slug>.partial.json`` (replaced by the full report)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug_of(report)}.partial.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def write_report(report: dict, folder: Path) -> Path:
    """Write ``<date>-<device>.json`` and ``.md`` into ``folder`` (removing the partial report);
    print the Markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    slug = slug_of(report)
    (folder / f"{slug}.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / f"{slug}.partial.json").unlink(missing_ok=True)
    markdown = to_markdown(report)
    (folder / f"{slug}.md").write_text(markdown)
    print(markdown)
    return folder / f"{slug}.md"


def to_markdown(report: dict) -> str:
    env, ref = report["environment"], report["reference"]
    lines = [
        f"# Kosmos-2 engine benchmark: {env['device_name']} ({env['device']})",
        "",
        f"{env['date']}; torch {env['torch']}, transformers {env['transformers']}, python {env['python']}, "
        f"{env['cpu_count']} CPUs ({env['torch_threads']} torch threads). Real architecture, random "
        f"weights, forced output length ({report['settings']['new_tokens']} tokens per caption).",
        "",
        "| path | batch | images/s | p50 latency s | p95 latency s | peak memory MiB |",
        "|---|---|---|---|---|---|",
        f"| reference (HF generate, fp32, 1 per call) | 1 | {ref['images_per_s']:.3f} | {ref['p50_s']:.3f} "
        f"| {ref['p95_s']:.3f} | {ref['peak_memory_mib']:.0f} |",
    ]
    lines += [
        f"| engine | {row['batch']} | {row['images_per_s']:.3f} | {row['p50_s']:.3f} | {row['p95_s']:.3f} "
        f"| {row['peak_memory_mib']:.0f} |"
        for row in report["engine"]
    ]
    caption = report["caption_batch1_s"]
    phrases = ", ".join(
        f"{row['phrases']}: {row['p50_s']:.3f} s ({row['p50_s'] / caption:.2f}x one caption)"
        for row in report["phrase_grounding"]
    )
    conc, band = report["concurrency"], report["decode_bandwidth"]
    share = f"{band['share_of_peak']:.1%}" if band["share_of_peak"] is not None else "unknown"
    lines += [
        "",
        f"- Best engine throughput / reference: **{report['speedup_vs_reference']:.1f}x**.",
        f"- Phrase grounding on one image (4-token answers), p50: {phrases}.",
        f"- {conc['clients']} concurrent single-image requests through the batcher: {conc['concurrent_s']:.2f} s, "
        f"one after another: {conc['sequential_s']:.2f} s (**{conc['speedup']:.1f}x**).",
        f"- Decode step at batch 1: {band['step_ms']:.1f} ms, {band['achieved_gb_per_s']:.1f} GB/s of "
        f"{band['decoder_weight_gb']:.2f} GB decoder weights: {share} of the peak "
        f"({band['peak_gb_per_s']:.0f} GB/s, {band['peak_source']}).",
        f"- Warm-up (and compilation) at deploy: {report['warm_up_s']:.1f} s; decoder "
        f"{report.get('decoder', 'not recorded')}, {report.get('dtype', 'dtype not recorded')}.",
        "",
    ]
    return "\n".join(lines)
