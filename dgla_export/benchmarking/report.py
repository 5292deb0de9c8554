"""A bench run for people and machines: results.json, results.csv, results.md, throughput.png and
per-image predictions in the ISIC submission layout, written as one folder swapped into place."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgla_export.benchmarking.results import BenchResult
from dgla_export.clinical import METRIC_COLUMNS, format_score
from dgla_export.data import submission_keys

__all__ = [
    "ceiling_lines",
    "format_speedup",
    "format_utilisation",
    "rows",
    "score_rows",
    "throughput_figure",
    "write_results",
]


def format_speedup(timing: dict[str, Any]) -> str:
    return f"{timing['speedup_vs_torch_eager']:.2f}x" if timing.get("speedup_vs_torch_eager") else "-"


def format_utilisation(timing: dict[str, Any]) -> str:
    """MFU against the datasheet peak and the share of the GEMM ceiling measured in the run; a share
    above 100% is not printed (a ceiling below what a runner reaches is none: the bench says so)."""
    mfu, gemm = timing.get("mfu"), timing.get("gemm_fraction")
    gemm_text = "above its ceiling" if gemm and gemm > 1 else f"{gemm:.0%} of GEMM" if gemm else ""
    if mfu and gemm_text:
        return f"{mfu:.1%} ({gemm_text})"
    if mfu:
        return f"{mfu:.1%}"
    return gemm_text or "n/a"


def ceiling_lines(result: BenchResult) -> list[str]:
    """The ceilings measured in the run (CPU per precision, with the kernel that set each; GPU), why
    a CPU precision has none, and any row that ran faster than its ceiling."""
    lines = []
    for precision, ceiling in result.cpu_ceilings.items():
        lines.append(
            f"CPU {precision.upper()} ceiling measured in this run: {ceiling.describe()} ({precision.upper()} CPU rows "
            "show their achieved rate as a share of it, marked 'of GEMM')."
        )
    for precision, why in result.cpu_ceilings_skipped.items():
        lines.append(f"No CPU {precision.upper()} ceiling: {why}.")
    if result.gpu_gemm_tflops:
        rates = ", ".join(f"{p.upper()} {t:.0f} TFLOP/s" for p, t in result.gpu_gemm_tflops.items())
        lines.append(f"GPU GEMM ceilings measured in this run: {rates} ('of GEMM': a share of its precision's).")
    above = [
        f"{b.backend} at batch {t.batch} ({t.gemm_fraction:.0%})"
        for b in result.backends
        for t in b.timing
        if t.gemm_fraction and t.gemm_fraction > 1
    ]
    if above:
        lines.append(
            f"Above their ceiling: {', '.join(above)}: no dense kernel measured here reached their rate, so that "
            "ceiling is none for them (their share is not printed)."
        )
    return lines


def score_rows(result: BenchResult) -> list[dict[str, Any]]:
    """With labels: one flat row of scores for the reference and for each runner that ran."""
    if result.reference_scores is None:
        return []
    named = [("reference-torch-fp32", result.reference_scores)]
    named += [(b.backend, b.scores) for b in result.backends if b.scores is not None]
    return [{"backend": name, **scores.row()} for name, scores in named]


def rows(result: BenchResult) -> list[dict[str, Any]]:
    """One flat row per runner and batch size: timing, parity and (with labels) scores."""
    scores = {row["backend"]: row for row in score_rows(result)}
    flat = []
    for backend in result.measured():
        assert backend.parity is not None
        for timing in backend.timing:
            scalars = {k: v for k, v in timing.to_dict().items() if not isinstance(v, list)}  # CSV: scalars only
            flat.append({
                "backend": backend.backend,
                "precision": backend.precision,
                **scalars,
                "parity_passed": backend.passed,
                "logits_max_rel": backend.parity.logits.max_rel,
                "probs_max_abs": backend.parity.probs.max_abs,
                "top1_agreement": backend.parity.top1_agreement,
                **({"maps_top1_max_abs": backend.maps.top1_max_abs, "maps_hottest_agreement":
                    backend.maps.hottest_agreement} if backend.maps is not None else {}),
                **{k: v for k, v in scores.get(backend.backend, {}).items() if k != "backend"},
            })  # fmt: skip
    return flat


def throughput_figure(table: Sequence[dict[str, Any]], title: str):
    """Pairs/s per batch size and runner: ticks at the measured sizes, throughput from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for backend in dict.fromkeys(r["backend"] for r in table):
        mine = [r for r in table if r["backend"] == backend]
        points = [(r["batch"], r["throughput_pairs_s"]) for r in mine]
        failed = not mine[0]["parity_passed"]  # only timed with --time-failed: drawn, but marked
        label = f"{backend} (parity FAILED)" if failed else backend
        ax.plot(*zip(*points, strict=True), marker="x" if failed else "o", ls=":" if failed else "-", label=label)
    ax.set(xlabel="batch size", ylabel="image pairs / s", title=title)
    measured = sorted({r["batch"] for r in table})
    if measured[-1] / measured[0] > 8:  # wide ranges read better on a log axis
        ax.set_xscale("log", base=2)
    ax.set_xticks(measured, [str(b) for b in measured])
    ax.minorticks_off()
    if len(measured) == 1:
        ax.set_xlim(measured[0] - 1, measured[0] + 1)
    ax.set_ylim(0, 1.1 * max(r["throughput_pairs_s"] for r in table))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _predictions(result: BenchResult, folder: Path) -> list[Path]:
    """Per-image probabilities of the reference and of each runner, in the ISIC 2018 Task 3
    submission layout (``image,MEL,NV,...``, images keyed as :func:`~dgla_export.data.submission_keys`
    says), so the official scorer can read them."""
    tables = {"reference-torch-fp32": result.reference_probabilities}
    tables.update({b.backend: b.probabilities for b in result.backends if b.probabilities is not None})
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, probabilities in tables.items():
        with open(folder / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", *result.class_names])
            for key, probs in zip(submission_keys(result.images), probabilities, strict=True):
                writer.writerow([key, *(f"{p:.9g}" for p in probs)])
        written.append(folder / f"{name}.csv")
    return written


def _heatmaps(result: BenchResult, images: dict[str, Any], folder: Path, size: int) -> list[Path]:
    """Per image, the reference's Grad-CAM and every runtime's map of the reference's top-1 class,
    side by side, ``size`` px square (the model's finest input): a person sees at a glance whether
    FP16 or INT8 still points at the same place. Named as the photo's row in the prediction CSVs."""
    from dgla_export.overlay import colour_bar, overlay, side_by_side

    if result.reference_cams is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(result.reference_probabilities)
    runtimes = [b for b in result.backends if b.cams is not None]
    written = []
    for index, (name, key) in enumerate(zip(result.images, submission_keys(result.images), strict=True)):
        top1 = int(probs[index].argmax())
        label = f"{result.class_names[top1]} {probs[index, top1]:.2f}"
        panels = [
            (
                "reference: PyTorch FP32, Grad-CAM (captum)",
                overlay(images[name], result.reference_cams[index, top1], label, size=size),
            )
        ]
        panels += [(b.backend, overlay(images[name], b.cams[index, top1], label, size=size)) for b in runtimes]  # type: ignore[index]
        side_by_side([*panels, ("scale", colour_bar(size))]).save(folder / f"{key}.png")
        written.append(folder / f"{key}.png")
    return written


def write_results(
    result: BenchResult, folder: Path, heatmaps: dict[str, Any] | None = None, heatmap_size: int = 448
) -> list[Path]:
    """results.json, results.csv, results.md, throughput.png and predictions/ as ``folder``,
    swapped into place whole (``folder`` must have passed :func:`check_output_folder`); with
    ``heatmaps`` (image name -> array), heatmaps/ too, ``heatmap_size`` px square."""
    from dgla_export.benchmarking.run import BENCH_COMMAND
    from dgla_export.io import replace_folder

    table = rows(result)
    with replace_folder(folder, command=BENCH_COMMAND) as staging:
        (staging / "results.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        if table:
            with open(staging / "results.csv", "w", newline="") as handle:
                columns = list(dict.fromkeys(key for row in table for key in row))  # PyTorch rows have no maps
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(table)
        (staging / "results.md").write_text(_markdown(result, table))
        predictions = [folder / p.relative_to(staging) for p in _predictions(result, staging / "predictions")]
        if heatmaps is not None:
            drawn = _heatmaps(result, heatmaps, staging / "heatmaps", heatmap_size)
            predictions += [folder / p.relative_to(staging) for p in drawn]
        if table:
            import matplotlib.pyplot as plt

            fig = throughput_figure(table, f"{result.model} throughput")
            fig.savefig(staging / "throughput.png", format="png", dpi=120)
            plt.close(fig)
    names = ["results.json", "results.csv", "results.md", "throughput.png"] if table else ["results.json", "results.md"]
    return [folder / name for name in names] + predictions


def _markdown(result: BenchResult, table: list[dict[str, Any]]) -> str:
    provenance = result.provenance
    lines = [
        f"# dgla-bench: {result.model}",
        "",
        f"dgla-export {provenance.get('package_version')}, commit `{provenance.get('commit')}`, "
        f"machine: {json.dumps(provenance.get('machine'))}",
        "",
        "| backend | batch | p50 ms | p99 ms | pairs/s | x eager | MFU | logits max rel | probs max abs | top-1 "
        "| maps top-1 max abs | hottest cell | parity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        maps = r.get("maps_top1_max_abs")
        hottest = f"{r['maps_hottest_agreement']:.0%}" if maps is not None else "-"
        lines.append(
            f"| {r['backend']} | {r['batch']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['throughput_pairs_s']:.2f} | {format_speedup(r)} | {format_utilisation(r)} | "
            f"{r['logits_max_rel']:.2e} | {r['probs_max_abs']:.2e} | {r['top1_agreement']:.0%} | "
            f"{'-' if maps is None else f'{maps:.2e}'} | {hottest} | {'pass' if r['parity_passed'] else 'FAIL'} |"
        )
    scores = score_rows(result)
    if scores:
        classes = result.class_names
        lines += [
            "",
            f"Scores against the labels ({scores[0]['images']} images; sensitivity = top-1 recall per class):",
            "",
            "| backend | accuracy | balanced accuracy | weighted F1 | macro AUC | "
            + " | ".join(f"{c} sens." for c in classes)
            + " |",
            "| --- " * (5 + len(classes)) + "|",
        ]
        for row in scores:
            figures = [format_score(row[k]) for k in METRIC_COLUMNS]
            figures += [format_score(row[f"sensitivity_{c}"]) for c in classes]
            lines.append(f"| {row['backend']} | " + " | ".join(figures) + " |")
    lines += [f"\n{line}" for line in ceiling_lines(result)]
    for b in result.backends:
        for outcome in ("skipped", "failed"):
            if getattr(b, outcome):
                lines.append(f"\n{outcome} {b.backend}: {getattr(b, outcome)}")
        if b.verdict == "failed":
            timed = "timed anyway, marked" if b.timing else "not timed, not ranked"
            lines.append(f"\nparity FAILED {b.backend} ({timed}): {'; '.join(b.failures)}")
    lines += [f"\nrecommended (fastest that passed parity), {r.describe()}" for r in result.recommendations()]
    return "\n".join(lines) + "\n"
