"""Parity first, then speed, for every backend; results as JSON, CSV, Markdown and a PNG."""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import json
import math
import multiprocessing
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from dgla_export.bench.backends import Backend
from dgla_export.compare import compare_logits
from dgla_export.data import image_key
from dgla_export.errors import UserError
from dgla_export.models.config import ModelConfig
from dgla_export.models.resnet import ResNet
from dgla_export.preprocess import Method, preprocess_batch
from dgla_export.validate import reference_logits

__all__ = [
    "BENCH_COMMAND",
    "PEAK_TFLOPS",
    "BenchOptions",
    "cpu_gemm_tflops",
    "format_speedup",
    "format_utilisation",
    "match_labels",
    "metrics_rows",
    "read_labels",
    "run_bench",
    "sample_seconds",
    "write_results",
]

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
    min_seconds: float = 3.0  # per backend and batch, over all rounds
    rounds: int = 3
    isolate: bool = True
    preprocess: Method = "fast"

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.min_runs < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise ValueError(f"bench options need rounds >= 1, min_runs >= 1, warmup and min_seconds >= 0: {self}")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batch sizes must be positive integers, got {self.batches}")


_T = TypeVar("_T")
BENCH_COMMAND = "dgla-bench"


def _peak_tflops(device: str, precision: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((table.get(precision) for key, table in PEAK_TFLOPS.items() if key in name), None)


@dataclasses.dataclass(frozen=True)
class _Reference:
    """What every backend is held to: the images, their inputs and the PyTorch FP32 logits."""

    config: ModelConfig
    names: list[str]
    tensors: tuple[torch.Tensor, ...]
    logits: np.ndarray
    labels: dict[str, int] | None
    metrics: dict[str, Any] | None


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
    """Parity, then timing, of every backend against the PyTorch FP32 reference.

    Timing runs in ``options.rounds`` rounds that visit every backend in turn, so that a slow
    spell of a shared machine lands on all backends rather than on whichever ran then; the
    samples of all rounds are pooled. With ``options.isolate`` each visit is a fresh process: a
    backend inherits no earlier backend's heap, thread pools or allocator caches, its memory
    figures are its own, and one that crashes its process is reported instead of ending the run.
    """
    names = [name for name, _ in images]
    arrays = preprocess_batch([image for _, image in images], model.config, method=options.preprocess)
    tensors = tuple(torch.from_numpy(a) for a in arrays)
    progress(f"PyTorch FP32 reference on {len(names)} images")
    logits = reference_logits(model, tensors)
    metrics = _metrics(logits, names, labels, model.config.class_names) if labels is not None else None
    reference = _Reference(model.config, names, tensors, logits, labels, metrics)
    results: dict[str, Any] = {
        "model": model.config.name,
        "class_names": list(model.config.class_names),
        "images": names,
        "macs_per_pair": macs_per_pair,
        "options": dataclasses.asdict(options),
    }
    if metrics is not None:
        results["reference_metrics"] = metrics
    results["reference_probabilities"] = probabilities(logits).tolist()
    run = _in_fresh_process if options.isolate else _in_this_process
    cpu_gemm = None
    if any(b.device == "cpu" and not b.unavailable() for b in backends):
        progress("CPU FP32 GEMM ceiling")
        cpu_gemm = results["cpu_fp32_gemm_tflops"] = run(cpu_gemm_tflops)
    records: list[dict[str, Any]] = []
    for backend in backends:
        records.append({"backend": backend.name, "precision": backend.precision, "device": backend.device})
        reason = backend.unavailable()
        if reason:
            records[-1]["skipped"] = reason
            progress(f"{backend.name} skipped: {reason}")
    measured: dict[str, list[dict[str, Any]]] = {b.name: [] for b in backends}
    for round_index in range(options.rounds):
        for backend, record in zip(backends, records, strict=True):
            if "skipped" in record or "failed" in record:
                continue
            first = round_index == 0
            progress(
                f"{backend.name}: round {round_index + 1}/{options.rounds}"
                + (f", parity on {len(names)} images" if first else "")
            )
            job = _BackendJob(backend, model if backend.uses_model else None, onnx_files, reference, options, first)
            try:
                outcome = run(job)
            except Exception as err:  # e.g. the backend's process died: report it, go on
                outcome = {"failed": f"{type(err).__name__}: {err}"}
            measured[backend.name].extend(outcome.pop("batches", []))
            record.update(outcome if first else {k: v for k, v in outcome.items() if k in ("skipped", "failed")})
            for problem in ("skipped", "failed"):
                if problem in outcome:
                    progress(f"{backend.name} {problem}: {outcome[problem]}")
    for backend, record in zip(backends, records, strict=True):
        if "parity" in record and "failed" not in record:
            visits = measured[backend.name]
            record["timing"] = [
                _summarise(backend, [v for v in visits if v["batch"] == batch], 2 * macs_per_pair, cpu_gemm)
                for batch in options.batches
            ]
    _add_speedups(records)
    results["backends"] = records
    return results


def _in_this_process(job: Callable[[], _T]) -> _T:
    return job()


def _in_fresh_process(job: Callable[[], _T]) -> _T:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(job).result()


@dataclasses.dataclass(frozen=True)
class _BackendJob:
    """One visit of one backend; picklable, so it can run in a fresh process."""

    backend: Backend
    model: ResNet | None
    onnx_files: dict[str, Path]
    reference: _Reference
    options: BenchOptions
    check_parity: bool

    def __call__(self) -> dict[str, Any]:
        """Load, (check parity,) time every batch; failures become part of the record."""
        backend = self.backend
        device_baseline = _device_used_mb() if backend.device == "cuda" else None
        t0 = time.perf_counter()
        try:
            backend.load(self.model, self.onnx_files)
        except Exception as err:  # reported as a failure of this backend; the others still run
            return {"failed": f"load failed: {type(err).__name__}: {err}"}
        record: dict[str, Any] = {"load_s": time.perf_counter() - t0, "precision": backend.precision}
        try:
            if self.check_parity:
                record.update(backend.details())
                record.update(_parity(backend, self.reference))
            record["batches"] = [self._measure(batch, device_baseline) for batch in self.options.batches]
        except Exception as err:  # one broken backend must not hide the others' results
            record["failed"] = f"{type(err).__name__}: {err}"
        finally:
            backend.release()
        return record

    def _measure(self, batch: int, device_baseline: float | None) -> dict[str, Any]:
        """Raw samples (ms) and memory figures of one batch size in this visit."""
        backend, tensors = self.backend, self.reference.tensors
        index = np.arange(batch) % len(tensors[0])
        host = tuple(t[index].contiguous() for t in tensors)
        on_cpu = backend.device == "cpu"
        if not on_cpu:
            host = tuple(t.pin_memory() for t in host)
            torch.cuda.reset_peak_memory_stats()
        _reset_peak_rss()
        t0 = time.perf_counter()
        staged = backend.stage(host)
        backend.sync()
        h2d_ms = 0.0 if on_cpu else (time.perf_counter() - t0) * 1e3
        samples = _time(backend, staged, self.options)
        return {
            "batch": batch,
            "samples_ms": [s * 1e3 for s in samples],
            "h2d_ms": h2d_ms,
            # torch's allocator sees only torch tensors; ONNX Runtime and TensorRT allocate their
            # own, which the device-level figure (allocators keep their peak reserved) includes.
            "gpu_torch_peak_mb": None if on_cpu else torch.cuda.max_memory_allocated() / 2**20,
            "gpu_device_used_mb": None if device_baseline is None else _device_used_mb() - device_baseline,
            "process_peak_rss_mb": _peak_rss_mb(),
        }


def _summarise(
    backend: Backend, visits: list[dict[str, Any]], flops_per_pair: int, cpu_gemm: float | None
) -> dict[str, Any]:
    """Pool one batch size's samples over all rounds; memory is the largest seen."""
    batch = visits[0]["batch"]
    samples = np.concatenate([v["samples_ms"] for v in visits])
    p50 = float(np.percentile(samples, 50))
    achieved_tflops = flops_per_pair * batch / (p50 / 1e3) / 1e12
    peak = _peak_tflops(backend.device, backend.precision)

    def largest(key: str) -> float | None:
        values = [v[key] for v in visits if v[key] is not None]
        return max(values) if values else None

    return {
        "batch": batch,
        "rounds": len(visits),
        "runs": len(samples),
        "p50_ms": p50,
        "p90_ms": float(np.percentile(samples, 90)),
        "p99_ms": float(np.percentile(samples, 99)),
        "round_p50_ms": [float(np.median(v["samples_ms"])) for v in visits],
        "throughput_pairs_s": batch / (p50 / 1e3),
        "h2d_ms": float(np.median([v["h2d_ms"] for v in visits])),
        "achieved_tflops": achieved_tflops,
        "mfu": achieved_tflops / peak if peak else None,
        "cpu_gemm_fraction": achieved_tflops / cpu_gemm if cpu_gemm and backend.device == "cpu" else None,
        "gpu_torch_peak_mb": largest("gpu_torch_peak_mb"),
        "gpu_device_used_mb": largest("gpu_device_used_mb"),
        "process_peak_rss_mb": largest("process_peak_rss_mb"),
    }


def _parity(backend: Backend, reference: _Reference) -> dict[str, Any]:
    """Compare one image at a time (batch 1: no batch-composition effects) with the reference."""
    logits = np.concatenate(
        [
            backend.infer(backend.stage(tuple(t[i : i + 1] for t in reference.tensors)))
            for i in range(len(reference.names))
        ]
    )
    comparison = compare_logits(
        reference.logits,
        logits,
        tolerance=reference.config.tolerances[backend.precision],
        image_names=reference.names,
        class_names=reference.config.class_names,
    )
    record: dict[str, Any] = {"parity": comparison.to_dict(), "probabilities": probabilities(logits).tolist()}
    if reference.labels is not None and reference.metrics is not None:
        metrics = _metrics(logits, reference.names, reference.labels, reference.config.class_names)
        record["metrics"] = metrics
        record["metrics_delta"] = _metrics_delta(metrics, reference.metrics)
    return record


def sample_seconds(
    fn: Callable[[], object],
    *,
    warmup: int,
    min_runs: int,
    min_seconds: float,
    sync: Callable[[], None] = lambda: None,
) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` calls, until both minimums are met.

    ``sync`` runs after every call inside the sample (a synchronised clock: GPU work is finished
    when the sample ends)."""
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
    return samples


def _time(backend: Backend, staged: tuple[torch.Tensor, ...], options: BenchOptions) -> list[float]:
    """One round's share of the minimum runs and time."""
    return sample_seconds(
        lambda: backend.infer(staged),
        warmup=options.warmup,
        min_runs=math.ceil(options.min_runs / options.rounds),
        min_seconds=options.min_seconds / options.rounds,
        sync=backend.sync,
    )


def _add_speedups(records: list[dict[str, Any]]) -> None:
    """``speedup_vs_torch_eager``: p50 of eager FP32 on the same device and batch, same run."""
    eager = {
        (r["device"], t["batch"]): t["p50_ms"]
        for r in records
        if r["backend"] == f"torch-eager-{r['device']}"
        for t in r.get("timing", [])
    }
    for record in records:
        for timing in record.get("timing", []):
            base = eager.get((record["device"], timing["batch"]))
            timing["speedup_vs_torch_eager"] = base / timing["p50_ms"] if base else None


@functools.lru_cache(maxsize=1)
def cpu_gemm_tflops(size: int = 4096, repeats: int = 2) -> float:
    """FP32 TFLOP/s of the best of ``repeats`` size^3 matrix products (numpy's BLAS, all cores).

    No datasheet peak is known for a CPU (clocks vary, VMs hide the model), so CPU backends are
    held against what a dense kernel reaches on this machine, measured in the same run.
    """
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    a @ a  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e12


def _device_used_mb() -> float:
    """Memory in use on the current GPU (all processes), from cudaMemGetInfo."""
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def _reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter (Linux) so that each batch reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_labels(path: Path, class_names: Sequence[str]) -> dict[str, int]:
    """ISIC 2018 Task 3 ground truth: ``image`` column + one-hot class columns -> {image key: class}.

    Every row must hold exactly one 1 (and 0 elsewhere): a row without one is refused, never
    read as the first class. A UTF-8 byte-order mark (Excel writes one) is read as such, and image
    names may carry their file extension (``ISIC_0024306.jpg`` is ``ISIC_0024306``)."""
    if not path.is_file():
        raise UserError(f"--labels {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in ("image", *class_names) if rows and c not in rows[0]]
    if not rows or missing:
        raise UserError(f"--labels {path}: expected columns image,{','.join(class_names)}; missing {missing}")
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            values = [float(row[c]) for c in class_names]
        except (TypeError, ValueError):
            values = []
        if sorted(values) != [0.0] * (len(class_names) - 1) + [1.0]:
            raise UserError(
                f"--labels {path}, line {line} ({row.get('image')}): the class columns must hold one 1 and "
                f"0 elsewhere, found {[row.get(c) for c in class_names]}"
            )
        key = image_key(row["image"])
        if key in labels:
            raise UserError(f"--labels {path}, line {line}: image {row['image']} is labelled twice")
        labels[key] = values.index(1.0)
    return labels


def _listed(names: Sequence[str], limit: int = 3) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def match_labels(names: Sequence[str], labels: dict[str, int], path: Path, *, allow_subset: bool = False) -> None:
    """Every image of the run has a label and every label an image, unless ``allow_subset``
    (then only the labelled images are scored): checked before the slow work."""
    keys = {image_key(n) for n in names}
    unlabelled, orphans = sorted(keys - set(labels)), sorted(set(labels) - keys)
    if not keys & set(labels):
        raise UserError(f"--labels {path} names none of the {len(keys)} images (e.g. {_listed(sorted(keys))})")
    if (unlabelled or orphans) and not allow_subset:
        parts = [f"{len(unlabelled)} images without a label ({_listed(unlabelled)})"] if unlabelled else []
        parts += [f"{len(orphans)} labels without an image ({_listed(orphans)})"] if orphans else []
        raise UserError(
            f"--labels {path} does not match the images: {'; '.join(parts)}; fix the CSV or the image folder, "
            "or pass --allow-label-subset to score only the labelled images"
        )


def probabilities(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(logits).softmax(-1).numpy()


def _metrics(
    logits: np.ndarray, names: Sequence[str], labels: dict[str, int], classes: Sequence[str]
) -> dict[str, Any]:
    from sklearn import metrics

    keep = [i for i, n in enumerate(names) if image_key(n) in labels]
    if not keep:
        raise UserError("no image of the run has a label in the labels CSV")
    truth = np.array([labels[image_key(names[i])] for i in keep])
    scores = probabilities(logits[keep])
    predicted = scores.argmax(1)
    present = np.unique(truth)
    # Per-class sensitivity: of the images whose ground truth is the class, the share whose top-1
    # is that class (what balanced accuracy averages). A class absent from the ground truth has
    # none: its sensitivity is undefined (None), not 0.
    recall = metrics.recall_score(truth, predicted, labels=present, average=None, zero_division=0)
    sensitivity: dict[str, float | None] = dict.fromkeys(classes)
    sensitivity.update({classes[c]: float(r) for c, r in zip(present, recall, strict=True)})
    record = {
        "images": len(keep),
        "accuracy": metrics.accuracy_score(truth, predicted),
        "weighted_f1": metrics.f1_score(truth, predicted, average="weighted", zero_division=0),
        "balanced_accuracy": metrics.balanced_accuracy_score(truth, predicted),
        "sensitivity": sensitivity,
        "classes_absent_from_ground_truth": [c for c, v in sensitivity.items() if v is None],
    }
    record["macro_auc"] = (
        metrics.roc_auc_score(truth, scores, multi_class="ovr", average="macro", labels=range(len(classes)))
        if len(present) == len(classes)
        else None
    )
    return record


def _metrics_delta(metrics: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Backend minus reference for every score (per class for the sensitivities)."""
    delta: dict[str, Any] = {}
    for key, value in metrics.items():
        if key == "sensitivity":
            delta[key] = {c: None if value[c] is None else value[c] - reference[key][c] for c in value}
        elif (
            key not in ("images", "classes_absent_from_ground_truth")
            and value is not None
            and reference[key] is not None
        ):
            delta[key] = value - reference[key]
    return delta


def format_speedup(timing: dict[str, Any]) -> str:
    return f"{timing['speedup_vs_torch_eager']:.2f}x" if timing.get("speedup_vs_torch_eager") else "-"


def format_utilisation(timing: dict[str, Any]) -> str:
    """MFU against the datasheet peak, or on a CPU the share of the measured GEMM ceiling."""
    if timing.get("mfu"):
        return f"{timing['mfu']:.1%}"
    if timing.get("cpu_gemm_fraction"):
        return f"{timing['cpu_gemm_fraction']:.0%} of GEMM"
    return "n/a"


def throughput_figure(rows: Sequence[dict[str, Any]], title: str):
    """Pairs/s per batch size and backend: ticks at the measured sizes, throughput from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        points = [(r["batch"], r["throughput_pairs_s"]) for r in rows if r["backend"] == backend]
        ax.plot(*zip(*points, strict=True), marker="o", label=backend)
    ax.set(xlabel="batch size", ylabel="image pairs / s", title=title)
    measured = sorted({r["batch"] for r in rows})
    if measured[-1] / measured[0] > 8:  # wide ranges read better on a log axis
        ax.set_xscale("log", base=2)
    ax.set_xticks(measured, [str(b) for b in measured])
    ax.minorticks_off()
    if len(measured) == 1:
        ax.set_xlim(measured[0] - 1, measured[0] + 1)
    ax.set_ylim(0, 1.1 * max(r["throughput_pairs_s"] for r in rows))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "weighted_f1", "macro_auc")


def metrics_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """With --labels: one flat row of scores for the reference and for each backend that ran."""
    if "reference_metrics" not in results:
        return []
    named = [("reference-torch-fp32", results["reference_metrics"])]
    named += [(b["backend"], b["metrics"]) for b in results["backends"] if "metrics" in b]
    return [
        {
            "backend": name,
            "images": metrics["images"],
            **{key: metrics[key] for key in METRIC_COLUMNS},
            **{f"sensitivity_{c}": value for c, value in metrics["sensitivity"].items()},
        }
        for name, metrics in named
    ]


def format_score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _predictions(results: dict[str, Any], folder: Path) -> list[Path]:
    """Per-image probabilities of the reference and of each backend, in the ISIC 2018 Task 3
    submission layout (``image,MEL,NV,...``), so the official scorer can read them."""
    classes = results["class_names"]
    tables = {"reference-torch-fp32": results["reference_probabilities"]}
    tables.update({b["backend"]: b["probabilities"] for b in results["backends"] if "probabilities" in b})
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in tables.items():
        with open(folder / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", *classes])
            for image, probs in zip(results["images"], rows, strict=True):
                writer.writerow([image_key(image), *(f"{p:.9g}" for p in probs)])
        written.append(folder / f"{name}.csv")
    return written


def write_results(results: dict[str, Any], folder: Path, metadata: dict[str, Any]) -> list[Path]:
    """results.json, results.csv, results.md, throughput.png and predictions/ as ``folder``,
    swapped into place whole (``folder`` must have passed :func:`check_output_folder`)."""
    from dgla_export.io import replace_folder

    full = {**metadata, **results}
    scores = {row["backend"]: row for row in metrics_rows(results)}
    rows = [
        {
            "backend": b["backend"],
            "precision": b["precision"],
            **{key: value for key, value in t.items() if not isinstance(value, list)},  # CSV: scalars only
            "parity_passed": b["parity"]["passed"],
            "logits_max_rel": b["parity"]["logits"]["max_rel"],
            "probs_max_abs": b["parity"]["probs"]["max_abs"],
            "top1_agreement": b["parity"]["top1_agreement"],
            **{k: v for k, v in scores.get(b["backend"], {}).items() if k != "backend"},
        }
        for b in results["backends"]
        if "timing" in b
        for t in b["timing"]
    ]
    with replace_folder(folder, command=BENCH_COMMAND) as staging:
        (staging / "results.json").write_text(json.dumps(full, indent=2, default=str))
        if rows:
            with open(staging / "results.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        (staging / "results.md").write_text(_markdown(results, metadata, rows, list(scores.values())))
        predictions = [folder / p.relative_to(staging) for p in _predictions(results, staging / "predictions")]
        if rows:
            import matplotlib.pyplot as plt

            fig = throughput_figure(rows, f"{results['model']} throughput")
            fig.savefig(staging / "throughput.png", format="png", dpi=120)
            plt.close(fig)
    names = ["results.json", "results.csv", "results.md", "throughput.png"] if rows else ["results.json", "results.md"]
    return [folder / name for name in names] + predictions


def _markdown(
    results: dict[str, Any], metadata: dict[str, Any], rows: list[dict[str, Any]], scores: list[dict[str, Any]]
) -> str:
    lines = [
        f"# dgla-bench: {results['model']}",
        "",
        f"commit `{metadata.get('commit')}`, machine: {json.dumps(metadata.get('machine'))}",
        "",
        "| backend | batch | p50 ms | p99 ms | pairs/s | x eager | MFU | logits max rel | probs max abs | top-1 "
        "| parity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['batch']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['throughput_pairs_s']:.2f} | {format_speedup(r)} | {format_utilisation(r)} | "
            f"{r['logits_max_rel']:.2e} | {r['probs_max_abs']:.2e} | "
            f"{r['top1_agreement']:.0%} | {'pass' if r['parity_passed'] else 'FAIL'} |"
        )
    if scores:
        classes = results["class_names"]
        lines += [
            "",
            f"Scores against the labels ({scores[0]['images']} images; sensitivity = top-1 recall per class):",
            "",
            "| backend | accuracy | balanced accuracy | weighted F1 | macro AUC | "
            + " | ".join(f"{c} sens." for c in classes)
            + " |",
            "| --- " * (5 + len(classes)) + "|",
        ]
        for score in scores:
            figures = [format_score(score[k]) for k in METRIC_COLUMNS]
            figures += [format_score(score[f"sensitivity_{c}"]) for c in classes]
            lines.append(f"| {score['backend']} | " + " | ".join(figures) + " |")
    if results.get("cpu_fp32_gemm_tflops"):
        lines.append(
            f"\nCPU FP32 GEMM ceiling measured in this run: {results['cpu_fp32_gemm_tflops'] * 1e3:.0f} GFLOP/s "
            "(CPU rows show their achieved FLOP/s as a share of it, marked 'of GEMM')."
        )
    for b in results["backends"]:
        for outcome in ("skipped", "failed"):
            if outcome in b:
                lines.append(f"\n{outcome} {b['backend']}: {b[outcome]}")
    return "\n".join(lines) + "\n"
