"""Parity first, then speed, for every backend; results as JSON, CSV, Markdown and a PNG."""

from __future__ import annotations

import csv
import dataclasses
import json
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgla_export.bench.backends import Backend
from dgla_export.compare import compare_logits
from dgla_export.models.resnet import ResNet
from dgla_export.preprocess import preprocess_batch
from dgla_export.validate import reference_logits

__all__ = ["PEAK_TFLOPS", "BenchOptions", "run_bench", "write_results"]

# Dense peak TFLOP/s by GPU name fragment and precision (NVIDIA datasheets, SXM parts);
# fp32 is the non-tensor-core figure. MFU is reported only where the device is listed here.
PEAK_TFLOPS = {
    "H100": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0},
    "H200": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0},
    "A100": {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0},
}


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    batches: tuple[int, ...] = (1, 4)
    warmup: int = 2
    min_runs: int = 5
    min_seconds: float = 3.0


def _peak_tflops(device: str, precision: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((table.get(precision) for key, table in PEAK_TFLOPS.items() if key in name), None)


def _time(backend: Backend, staged: tuple[torch.Tensor, ...], options: BenchOptions) -> list[float]:
    for _ in range(options.warmup):
        backend.infer(staged)
    backend.sync()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < options.min_runs or time.perf_counter() - started < options.min_seconds:
        t0 = time.perf_counter()
        backend.infer(staged)
        backend.sync()  # synchronised clock: GPU work is finished when the sample ends
        samples.append(time.perf_counter() - t0)
    return samples


def run_bench(
    model: ResNet,
    backends: Sequence[Backend],
    images: Sequence[tuple[str, np.ndarray]],
    onnx_files: dict[str, Path],
    *,
    options: BenchOptions,
    macs_per_pair: int,
    labels: dict[str, int] | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    config = model.config
    names = [name for name, _ in images]
    tensors = preprocess_batch([image for _, image in images], config)
    progress(f"PyTorch FP32 reference on {len(names)} images")
    reference = reference_logits(model, tensors)
    results: list[dict[str, Any]] = []
    for backend in backends:
        reason = backend.unavailable()
        record: dict[str, Any] = {
            "backend": backend.name,
            "precision": backend.precision,
            "device": backend.device,
        }
        if reason:
            progress(f"skip {backend.name}: {reason}")
            results.append({**record, "skipped": reason})
            continue
        progress(f"{backend.name}: load")
        t0 = time.perf_counter()
        try:
            backend.load(model, onnx_files)
        except Exception as err:  # a backend that cannot load is reported, not fatal
            results.append({**record, "skipped": f"load failed: {err}"})
            progress(f"skip {backend.name}: load failed: {err}")
            continue
        record["load_s"] = time.perf_counter() - t0
        try:
            _measure(backend, record, tensors, reference, names, config, options, macs_per_pair, labels, progress)
        except Exception as err:  # one broken backend must not hide the others' results
            record["failed"] = f"{type(err).__name__}: {err}"
            progress(f"{backend.name} failed: {record['failed']}")
        results.append(record)
    return {
        "model": config.name,
        "images": names,
        "macs_per_pair": macs_per_pair,
        "options": dataclasses.asdict(options),
        "backends": results,
    }


def _measure(
    backend: Backend,
    record: dict[str, Any],
    tensors: tuple[torch.Tensor, ...],
    reference: np.ndarray,
    names: list[str],
    config: Any,
    options: BenchOptions,
    macs_per_pair: int,
    labels: dict[str, int] | None,
    progress: Callable[[str], None],
) -> None:
    progress(f"{backend.name}: parity on {len(names)} images")
    logits = np.concatenate(
        [backend.infer(backend.stage(tuple(t[i : i + 1] for t in tensors))) for i in range(len(names))]
    )
    comparison = compare_logits(
        reference,
        logits,
        tolerance=config.tolerances[backend.precision],
        image_names=names,
        class_names=config.class_names,
    )
    record["parity"] = comparison.to_dict()
    if labels is not None:
        record["metrics"] = _metrics(logits, names, labels, config.class_names)
    record["timing"] = []
    for batch in options.batches:
        index = np.arange(batch) % len(names)
        host = tuple(t[index].contiguous() for t in tensors)
        if backend.device == "cuda":
            host = tuple(t.pin_memory() for t in host)
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        staged = backend.stage(host)
        backend.sync()
        h2d_ms = (time.perf_counter() - t0) * 1e3 if backend.device == "cuda" else 0.0
        progress(f"{backend.name}: batch {batch}")
        samples = np.array(_time(backend, staged, options)) * 1e3
        p50 = float(np.percentile(samples, 50))
        peak = _peak_tflops(backend.device, backend.precision)
        achieved_tflops = 2 * macs_per_pair * batch / (p50 / 1e3) / 1e12
        record["timing"].append(
            {
                "batch": batch,
                "runs": len(samples),
                "p50_ms": p50,
                "p90_ms": float(np.percentile(samples, 90)),
                "p99_ms": float(np.percentile(samples, 99)),
                "throughput_pairs_s": batch / (p50 / 1e3),
                "h2d_ms": h2d_ms,
                "achieved_tflops": achieved_tflops,
                "mfu": achieved_tflops / peak if peak else None,
                "gpu_peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if backend.device == "cuda" else None,
                "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )


def read_labels(path: Path, class_names: Sequence[str]) -> dict[str, int]:
    """ISIC 2018 Task 3 ground truth: ``image`` column + one-hot class columns."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in ("image", *class_names) if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path}: expected columns image,{','.join(class_names)}; missing {missing}")
    return {row["image"]: int(np.argmax([float(row[c]) for c in class_names])) for row in rows}


def _metrics(
    logits: np.ndarray, names: Sequence[str], labels: dict[str, int], classes: Sequence[str]
) -> dict[str, Any]:
    from sklearn import metrics

    keep = [i for i, n in enumerate(names) if Path(n).stem in labels]
    if not keep:
        raise ValueError("no image of the run has a label in the labels CSV (matched by file stem)")
    truth = np.array([labels[Path(names[i]).stem] for i in keep])
    scores = torch.from_numpy(logits[keep]).softmax(-1).numpy()
    predicted = scores.argmax(1)
    present = np.unique(truth)
    record = {
        "images": len(keep),
        "accuracy": metrics.accuracy_score(truth, predicted),
        "weighted_f1": metrics.f1_score(truth, predicted, average="weighted", zero_division=0),
        "balanced_accuracy": metrics.balanced_accuracy_score(truth, predicted),
        "sensitivity": dict(
            zip(
                classes,
                metrics.recall_score(
                    truth, predicted, labels=range(len(classes)), average=None, zero_division=0
                ).tolist(),
                strict=True,
            )
        ),
    }
    record["macro_auc"] = (
        metrics.roc_auc_score(truth, scores, multi_class="ovr", average="macro", labels=range(len(classes)))
        if len(present) == len(classes)
        else None
    )
    return record


def write_results(results: dict[str, Any], folder: Path, metadata: dict[str, Any]) -> list[Path]:
    """results.json, results.csv, results.md and throughput.png in ``folder``."""
    from dgla_export.io import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    full = {**metadata, **results}
    rows = [
        {
            "backend": b["backend"],
            "precision": b["precision"],
            **t,
            "parity_passed": b["parity"]["passed"],
            "logits_max_rel": b["parity"]["logits"]["max_rel"],
            "probs_max_abs": b["parity"]["probs"]["max_abs"],
            "top1_agreement": b["parity"]["top1_agreement"],
        }
        for b in results["backends"]
        if "timing" in b
        for t in b["timing"]
    ]
    written = []
    with atomic_path(folder / "results.json") as tmp:
        tmp.write_text(json.dumps(full, indent=2, default=str))
    written.append(folder / "results.json")
    if rows:
        with atomic_path(folder / "results.csv") as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append(folder / "results.csv")
    lines = [
        f"# dgla-bench: {results['model']}",
        "",
        f"commit `{metadata.get('commit')}`, machine: {json.dumps(metadata.get('machine'))}",
        "",
        "| backend | batch | p50 ms | p99 ms | pairs/s | logits max rel | probs max abs | top-1 | parity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['batch']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['throughput_pairs_s']:.2f} | {r['logits_max_rel']:.2e} | {r['probs_max_abs']:.2e} | "
            f"{r['top1_agreement']:.0%} | {'pass' if r['parity_passed'] else 'FAIL'} |"
        )
    for b in results["backends"]:
        for outcome in ("skipped", "failed"):
            if outcome in b:
                lines.append(f"\n{outcome} {b['backend']}: {b[outcome]}")
    with atomic_path(folder / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    written.append(folder / "results.md")
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for backend in dict.fromkeys(r["backend"] for r in rows):
            points = [(r["batch"], r["throughput_pairs_s"]) for r in rows if r["backend"] == backend]
            ax.plot(*zip(*points, strict=True), marker="o", label=backend)
        ax.set(xlabel="batch", ylabel="image pairs / s", title=f"{results['model']} throughput")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(folder / "throughput.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        written.append(folder / "throughput.png")
    return written
