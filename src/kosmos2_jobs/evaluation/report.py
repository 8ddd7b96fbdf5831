"""The evaluation report: ``report.md`` and its pictures (matplotlib): precision-recall curves,
per-class AP, precision, recall and F1 against the threshold, and drawn examples of hits and
misses (the app's own drawing: predictions in their class colours, targets in white)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .ground_truth import LabelledImage
from .project import ProjectEvaluation

EXAMPLES = 3


def write_report(evaluation: ProjectEvaluation, out: Path, title: str, read_image: Callable, runner_name: str) -> Path:
    """Write the report into folder ``out``; the path of ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.measured
    threshold = metrics.recommended_threshold
    pictures = [
        _pr_curves(evaluation, out / "pr_curves.png"),
        _per_class_ap(evaluation, out / "per_class_ap.png"),
        _threshold_curves(evaluation, out / "f1_threshold.png", threshold),
    ]
    examples = _examples(evaluation, out / "examples", threshold, read_image)
    text = _markdown(evaluation, title, runner_name, threshold, pictures, examples, out)
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    return figure, figure.add_subplot()


def _pr_curves(evaluation: ProjectEvaluation, path: Path) -> Path:
    figure, axes = _figure()
    for name, (recall, precision) in evaluation.measured.pr_curves.items():
        kept = precision > -1
        if kept.any():
            axes.plot(recall[kept], precision[kept], label=name)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall at IoU 0.5")
    if evaluation.measured.pr_curves:
        axes.legend(loc="lower left", fontsize="small")
    figure.savefig(path)
    return path


def _per_class_ap(evaluation: ProjectEvaluation, path: Path) -> Path:
    figure, axes = _figure()
    names = list(evaluation.phrases)
    values = [(max(v[0], 0), max(v[1], 0)) for v in (evaluation.measured.per_class_ap[n] for n in names)]
    positions = np.arange(len(names))
    axes.bar(positions - 0.2, [v[0] for v in values], 0.4, label="AP (IoU 0.5:0.95)")
    axes.bar(positions + 0.2, [v[1] for v in values], 0.4, label="AP50")
    axes.set_xticks(positions, names, rotation=20 if len(names) > 4 else 0)
    axes.set(ylim=(0, 1), title="AP per class")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def _threshold_curves(evaluation: ProjectEvaluation, path: Path, threshold: float) -> Path:
    figure, axes = _figure()
    overall = evaluation.measured.overall
    axes.plot(overall.thresholds, overall.precision, label="precision")
    axes.plot(overall.thresholds, overall.recall, label="recall")
    axes.plot(overall.thresholds, overall.f1, label="F1", linewidth=2.5)
    for name, per_class in evaluation.measured.per_class.items():
        axes.plot(per_class.thresholds, per_class.f1, linestyle=":", label=f"F1 {name}")
    axes.axvline(threshold, color="grey", linestyle="--")
    top_score = max(overall.thresholds, default=1.0)
    axes.set(xlabel="confidence_threshold", ylabel="at IoU 0.5", xlim=(0, min(1.0, top_score * 1.1)), ylim=(0, 1.02),
             title=f"Recommended confidence_threshold: {threshold:.4g}")  # fmt: skip
    axes.legend(fontsize="small")
    figure.savefig(path)
    return path


def _missed(evaluation: ProjectEvaluation, index: int, threshold: float) -> int:
    """Targets of image ``index`` that no box scored at least ``threshold`` matched."""
    matched = evaluation.measured.matched[index]
    found = sum(m for m, (_, _, s) in zip(matched, evaluation.detections[index]) if s >= threshold)
    return len(evaluation.images[index].boxes) - found


def _examples(evaluation: ProjectEvaluation, folder: Path, threshold: float, read_image) -> list[tuple[str, Path]]:
    """Drawn images where every target was found, and where the most were missed."""
    missed = [_missed(evaluation, i, threshold) for i in range(len(evaluation.images))]
    found = [i for i, m in enumerate(missed) if m == 0 and evaluation.images[i].boxes][:EXAMPLES]
    misses = sorted((i for i, m in enumerate(missed) if m), key=lambda i: -missed[i])[:EXAMPLES]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):  # a report written here before
        old.unlink()
    drawn = []
    for kind, indices in (("found", found), ("missed", misses)):
        for i in indices:
            path = folder / f"{kind}_{i:04d}.png"
            Image.fromarray(_drawn(evaluation.images[i], evaluation.detections[i], threshold, read_image)).save(path)
            drawn.append((kind, path))
    return drawn


def _drawn(image: LabelledImage, detections, threshold: float, read_image) -> np.ndarray:
    """The image (enlarged to about 320 pixels when smaller, so that labels can be read) with its
    boxes at ``threshold`` drawn by the app, and its targets in white."""
    from supervisely.nn.prediction_dto import PredictionBBox

    from kosmos2_app import AnnotationBuilder, draw_annotation

    pixels = read_image(image)
    scale = max(1, round(320 / max(pixels.shape[:2])))
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)

    def scaled(box):
        top, left, bottom, right = box
        return [top * scale, left * scale, (bottom + 1) * scale - 1, (right + 1) * scale - 1]

    boxes = [PredictionBBox(name, scaled(box), score) for name, box, score in detections if score >= threshold]
    canvas = Image.fromarray(draw_annotation(pixels, AnnotationBuilder().annotation(*pixels.shape[:2], boxes)))
    draw = ImageDraw.Draw(canvas)
    for _, box in image.boxes:
        top, left, bottom, right = scaled(box)
        draw.rectangle((left, top, right, bottom), outline=(255, 255, 255), width=max(1, scale // 2))
    return np.asarray(canvas)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")  # the ones that act mid-line


def escaped(text: str) -> str:
    """``text`` (a class name, a phrase, a file name: anyone's) as literal Markdown on one line:
    every character Markdown or HTML would act on backslash-escaped, line breaks as spaces."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _code(text: str) -> str:
    """``text`` fit for a Markdown code span: one line, no backtick to end it early."""
    return " ".join(str(text).split()).replace("`", "'")


def _number(value: float) -> str:
    return "n/a" if value < 0 else f"{value:.3f}"


def _mask_lines(evaluation: ProjectEvaluation) -> list[str]:
    """With masks: the mask APs, overall and per class."""
    masks = evaluation.mask_metrics
    if masks is None:
        return []
    per_class = ", ".join(f"{escaped(name)} {_number(masks.per_class_ap[name][0])}" for name in evaluation.phrases)
    return [
        f"- **Mask AP {_number(masks.ap)}, AP50 {_number(masks.ap50)}, AP75 {_number(masks.ap75)}** (SAM 2's mask "
        f"of every box against {evaluation.truth.mask_targets} polygon and bitmap targets, rectangles as filled "
        f"boxes; pycocotools' `segm`); per class: {per_class}.",
    ]


def _markdown(evaluation, title, runner_name, threshold, pictures, examples, out: Path) -> str:
    metrics = evaluation.measured
    p, r, f1 = metrics.overall.at(threshold)
    absent = evaluation.absent_rate(threshold)
    absent_any = evaluation.absent_rate(0.0)
    truth = evaluation.truth
    left_out = ", ".join(f"{n} {reason}" for reason, n in sorted(truth.left_out_labels.items())) or "none"
    lines = [
        f"# Kosmos-2 on {escaped(title)}",
        "",
        f"Phrase grounding through {runner_name}: every class grounded on every image by its phrase, all of an "
        "image's phrases in one vision pass, no confidence cut. Metrics by pycocotools; precision, recall and F1 "
        "at IoU 0.5 from its matching.",
        "",
        f"- Images evaluated: {len(evaluation.images)}; unreadable: {len(evaluation.unreadable)}; "
        f"targets: {metrics.overall.targets}; labels left out: {left_out}.",
        f"- **AP {_number(metrics.ap)}, AP50 {_number(metrics.ap50)}, AP75 {_number(metrics.ap75)}**.",
        f"- **Recommended `confidence_threshold`: {threshold:.4g}** (the highest F1): precision {p:.3f}, "
        f"recall {r:.3f}, F1 {f1:.3f}.",
        *_mask_lines(evaluation),
        "",
        "| class | phrase | targets | AP | AP50 | AP75 | precision | recall | F1 | boxed when absent | (any score) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, phrase in evaluation.phrases.items():
        ap, ap50, ap75 = metrics.per_class_ap[name]
        cp, cr, cf = metrics.per_class[name].at(threshold)
        boxed, without = absent[name]
        lines.append(
            f"| {escaped(name)} | {escaped(phrase)} | {metrics.per_class[name].targets} | {_number(ap)} | "
            f"{_number(ap50)} | "
            f"{_number(ap75)} | {cp:.3f} | {cr:.3f} | {cf:.3f} | {boxed} of {without} | "
            f"{absent_any[name][0]} of {without} |"
        )
    lines += [
        "",
        "Precision, recall and F1 are at the recommended threshold. *Boxed when absent*: images without the class "
        "on which Kosmos-2 still boxed its phrase (at that threshold, and at any score): Kosmos-2 grounds a "
        "phrase even when the thing is not there, and the threshold is what cuts those boxes.",
        "",
        *(f"![{path.stem}]({path.relative_to(out).as_posix()})" for path in pictures),
        "",
        "Examples at the recommended threshold, images where every target was found, then where the most "
        "were missed (predictions in their class colours with their scores, targets in white):",
        "",
        *(f"![{kind}]({path.relative_to(out).as_posix()})" for kind, path in examples),
    ]
    if evaluation.unreadable:
        lines += [
            "",
            "Unreadable:",
            "",
            *(f"- `{_code(u['image'])}`: {escaped(u['reason'])}" for u in evaluation.unreadable),
        ]
    return "\n".join(lines) + "\n"
