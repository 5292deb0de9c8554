"""Parity first, then speed, for every runner: the orchestration of a bench run.

Timing runs in ``options.rounds`` rounds that visit every runner in turn, so that a slow spell of
a shared machine lands on all of them rather than on whichever ran then; the samples of all
rounds are pooled. With ``options.isolate`` each visit is a fresh process: a runner inherits no
earlier runner's heap, thread pools or allocator caches, its memory figures are its own, and one
that crashes its process is reported instead of ending the run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from dgla_export.benchmarking.catalogue import Backend
from dgla_export.benchmarking.results import BackendResult, BenchResult
from dgla_export.benchmarking.timing import (
    Timing,
    Visit,
    cpu_gemm_tflops,
    device_used_mb,
    gpu_gemm_tflops,
    peak_rss_mb,
    peak_tflops,
    reset_peak_rss,
    sample_seconds,
)
from dgla_export.clinical import ClinicalCheck, Scores, clinical_check, score
from dgla_export.compare import softmax
from dgla_export.errors import OptionError
from dgla_export.machine import cpu_flags, native_bf16
from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import Method, preprocess_batch
from dgla_export.runtimes.base import Runner

__all__ = ["BENCH_COMMAND", "QUICK", "BenchOptions", "estimate_seconds", "run_bench"]

BENCH_COMMAND = "dgla-bench"
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    batches: tuple[int, ...] = (1, 4)
    warmup: int = 2
    min_runs: int = 5
    min_seconds: float = 3.0  # per runner and batch, over all rounds
    rounds: int = 3
    isolate: bool = True
    time_failed: bool = False  # time a runner that failed parity too (marked); by default it is not timed

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.min_runs < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise OptionError(f"bench options need rounds >= 1, min_runs >= 1, warmup and min_seconds >= 0: {self}")
        if not self.batches or min(self.batches) < 1:
            raise OptionError(f"batch sizes must be positive integers, got {self.batches}")


# --quick: one round, batch 1, a second of timing: a first look in a few minutes
QUICK = {"batches": (1,), "rounds": 1, "min_seconds": 1.0, "min_runs": 2, "warmup": 1}


def estimate_seconds(options: BenchOptions, runners: int, images: int, seconds_per_pair: float) -> float:
    """Roughly how long the runs take, from the reference's time per image pair (an upper bound
    where runtimes are faster than eager PyTorch): parity once, then warm-up and timing per round."""
    parity = runners * images * seconds_per_pair
    timing = sum(
        max(options.min_seconds, options.min_runs * batch * seconds_per_pair)
        + options.warmup * options.rounds * batch * seconds_per_pair
        for batch in options.batches
    )
    return parity + runners * timing


@dataclasses.dataclass(frozen=True)
class _Reference:
    """What every runner is held to: the images, their inputs and the PyTorch FP32 logits."""

    config: ModelConfig
    names: tuple[str, ...]
    inputs: dict[str, np.ndarray]
    logits: np.ndarray
    labels: dict[str, int] | None
    max_drop: dict[str, float] | None
    scores: Scores | None
    cams: np.ndarray | None  # Grad-CAM of the PyTorch model for every class (explained graphs only)


def run_bench(
    model: Any,
    backends: Sequence[tuple[Backend, Runner | None]],
    images: Sequence[tuple[str, np.ndarray]],
    *,
    options: BenchOptions,
    preprocess: Method = "fast",
    macs_per_pair: int,
    labels: dict[str, int] | None = None,
    max_drop: dict[str, float] | None = None,
    explain: bool = False,
    provenance: dict[str, Any] | None = None,
    progress: Callable[[str], None] = print,
    reference_done: Callable[[float], None] = lambda seconds_per_pair: None,
) -> BenchResult:
    """Parity, then timing, of every runner against the PyTorch FP32 reference.

    ``backends``: each runtime with its runner, or None where it cannot run (its record then says
    why). ``reference_done`` hears the reference's seconds per image pair (for an estimate). With
    ``explain`` (an explained graph among the runners), the reference also holds Grad-CAM of the
    PyTorch model, which every runner's ``cam`` output is compared with."""
    from dgla_export.validation import reference_logits, reference_maps

    config = model.config
    names = tuple(name for name, _ in images)
    arrays = preprocess_batch([image for _, image in images], config, method=preprocess)
    progress(f"PyTorch FP32 reference on {len(names)} images")
    started = time.perf_counter()
    logits = reference_logits(model, arrays)
    reference_done((time.perf_counter() - started) / len(names))
    scores = score(logits, names, labels, config.class_names) if labels is not None else None
    cams = None
    if explain:
        progress(f"Grad-CAM of the PyTorch model (captum) for every class on {len(names)} images")
        cams = reference_maps(model, arrays)
    inputs = dict(zip(config.input_names, arrays, strict=True))
    reference = _Reference(config, names, inputs, logits, labels, max_drop, scores, cams)
    run = _in_fresh_process if options.isolate else _in_this_process
    records = [BackendResult(b.name, r.precision if r else b.precision, b.device) for b, r in backends]
    result = BenchResult(
        model=config.name,
        class_names=tuple(config.class_names),
        images=names,
        macs_per_pair=macs_per_pair,
        options={**dataclasses.asdict(options), "preprocess": preprocess},
        reference_probabilities=softmax(logits.astype(np.float64)).tolist(),
        backends=records,
        reference_scores=scores,
        reference_cams=cams,
        provenance=dict(provenance or {}),
    )
    ceilings: dict[tuple[str, str], float] = {}  # (device, precision) -> TFLOP/s
    if any(b.device == "cpu" and r is not None for b, r in backends):
        progress("CPU FP32 GEMM ceiling")
        ceilings["cpu", "fp32"] = result.cpu_fp32_gemm_tflops = run(cpu_gemm_tflops)
    if any(b.device == "cpu" and b.precision == "bf16" for b, _ in backends):
        if native_bf16():
            progress("CPU BF16 GEMM ceiling")
            ceilings["cpu", "bf16"] = result.cpu_bf16_gemm_tflops = run(functools.partial(cpu_gemm_tflops, "bf16"))
        else:  # an emulated rate is no ceiling
            result.cpu_bf16_gemm_skipped = f"this CPU has no native BF16 (flags: {', '.join(cpu_flags())})"
    # INT8 has no ceiling measured: a share of another precision's would flatter it
    for precision in dict.fromkeys(b.precision for b, r in backends if b.device == "cuda" and r is not None):
        if precision != "int8":
            progress(f"GPU {precision.upper()} GEMM ceiling")
            ceilings["cuda", precision] = result.gpu_gemm_tflops[precision] = run(
                functools.partial(gpu_gemm_tflops, precision)
            )
    visits: dict[str, list[Visit]] = {b.name: [] for b, _ in backends}
    for round_index in range(options.rounds):
        for (backend, runner), record in zip(backends, records, strict=True):
            if (
                runner is None
                or record.failed
                or (record.parity is not None and not record.passed and not options.time_failed)
            ):
                continue
            first = round_index == 0
            progress(
                f"{backend.name}: round {round_index + 1}/{options.rounds}"
                + (f", parity on {len(names)} images" if first else "")
            )
            job = _Visit(runner, reference, options, check_parity=first)
            try:
                outcome = run(job)
            except Exception as err:  # e.g. the runner's process died: report it, go on
                outcome = _Outcome(failed=f"{type(err).__name__}: {err}")
            visits[backend.name].extend(outcome.visits)
            if first:
                record.load_s, record.details, record.parity = outcome.load_s, outcome.details, outcome.parity
                record.maps, record.cams = outcome.maps, outcome.cams
                record.probabilities, record.scores = outcome.probabilities, outcome.scores
                record.clinical = outcome.clinical
                if outcome.scores is not None and scores is not None:
                    record.scores_delta = outcome.scores.delta(scores)
            if outcome.failed:
                record.failed = outcome.failed
                progress(f"{backend.name} failed: {outcome.failed}")
            elif first and not record.passed:
                timed = "timed anyway (--time-failed)" if options.time_failed else "not timed"
                progress(f"{backend.name} failed parity: {'; '.join(record.failures)}; {timed}")
    for (backend, runner), record in zip(backends, records, strict=True):
        if runner is None:
            continue
        if record.measured and visits[backend.name]:
            peak = peak_tflops(backend.device, record.precision)
            gemm = ceilings.get((backend.device, record.precision))
            record.timing = [
                Timing.pool([v for v in visits[backend.name] if v.batch == batch], 2 * macs_per_pair, peak, gemm)
                for batch in options.batches
            ]
    _add_speedups(records)
    return result


def _add_speedups(records: Sequence[BackendResult]) -> None:
    """``speedup_vs_torch_eager``: p50 of eager FP32 on the same device and batch, same run."""
    eager = {(r.device, t.batch): t.p50_ms for r in records if r.backend == f"torch-eager-{r.device}" for t in r.timing}
    for record in records:
        for index, timing in enumerate(record.timing):
            base = eager.get((record.device, timing.batch))
            record.timing[index] = dataclasses.replace(
                timing, speedup_vs_torch_eager=base / timing.p50_ms if base else None
            )


def _in_this_process(job: Callable[[], _T]) -> _T:
    return job()


def _in_fresh_process(job: Callable[[], _T]) -> _T:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(job).result()


@dataclasses.dataclass
class _Outcome:
    """What one visit brings back across the process boundary."""

    failed: str | None = None
    load_s: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    parity: Any = None
    maps: Any = None
    cams: np.ndarray | None = None
    probabilities: list[list[float]] | None = None
    scores: Scores | None = None
    clinical: ClinicalCheck | None = None
    visits: list[Visit] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Visit:
    """One visit of one runner; picklable, so it can run in a fresh process."""

    runner: Runner
    reference: _Reference
    options: BenchOptions
    check_parity: bool

    def __call__(self) -> _Outcome:
        """Load, (check parity,) time every batch; failures become part of the outcome."""
        from dgla_export.console import quiet_libraries

        quiet_libraries(verbose=False)  # a fresh process starts with every library's chatter on
        warnings.simplefilter("ignore")  # third-party warnings never reach the user
        runner = self.runner
        device_baseline = device_used_mb() if runner.device == "cuda" else None
        t0 = time.perf_counter()
        try:
            runner.load()
        except Exception as err:  # reported as a failure of this runner; the others still run
            return _Outcome(failed=f"load failed: {type(err).__name__}: {err}")
        outcome = _Outcome(load_s=time.perf_counter() - t0)
        try:
            if self.check_parity:
                outcome.details = runner.details()
                self._parity(outcome)
                passed = all(c is None or c.passed for c in (outcome.parity, outcome.maps, outcome.clinical))
                if not passed and not self.options.time_failed:
                    return outcome  # a runtime whose numbers are wrong is not worth a speed figure
            outcome.visits = [self._measure(batch, device_baseline) for batch in self.options.batches]
        except Exception as err:  # one broken runner must not hide the others' results
            outcome.failed = f"{type(err).__name__}: {err}"
        finally:
            runner.release()
        return outcome

    def _parity(self, outcome: _Outcome) -> None:
        """One image at a time (batch 1: no batch-composition effects) against the reference."""
        from dgla_export.validation import parity

        reference, runner = self.reference, self.runner
        answers = [
            runner.infer({name: array[i : i + 1] for name, array in reference.inputs.items()})
            for i in range(len(reference.names))
        ]
        outputs = {key: np.concatenate([answer[key] for answer in answers]) for key in answers[0]}
        logits = outputs["logits"]
        found = parity(
            reference.logits, outputs, tolerance=reference.config.tolerances[runner.precision], names=reference.names,
            class_names=reference.config.class_names, reference_cams=reference.cams,
        )  # fmt: skip
        outcome.parity, outcome.maps = found.logits, found.maps
        if found.maps is not None:
            outcome.cams = outputs["cam"]
        outcome.probabilities = softmax(logits.astype(np.float64)).tolist()
        if reference.labels is not None:
            outcome.scores = score(logits, reference.names, reference.labels, reference.config.class_names)
            outcome.clinical = clinical_check(
                reference.logits, logits, reference.names, reference.labels, reference.config.class_names,
                max_drop=reference.max_drop,
            )  # fmt: skip

    def _measure(self, batch: int, device_baseline: float | None) -> Visit:
        """Raw samples (ms) and memory figures of one batch size in this visit."""
        runner, options = self.runner, self.options
        first = next(iter(self.reference.inputs.values()))
        index = np.arange(batch) % len(first)
        feed = {name: np.ascontiguousarray(array[index]) for name, array in self.reference.inputs.items()}
        on_cpu = runner.device == "cpu"
        if not on_cpu:
            import torch

            torch.cuda.reset_peak_memory_stats()
        reset_peak_rss()
        t0 = time.perf_counter()
        staged = runner.stage(feed)
        runner.sync()
        h2d_ms = 0.0 if on_cpu else (time.perf_counter() - t0) * 1e3
        samples = sample_seconds(
            lambda: runner.run(staged),
            warmup=options.warmup,
            min_runs=math.ceil(options.min_runs / options.rounds),
            min_seconds=options.min_seconds / options.rounds,
            sync=runner.sync,
        )
        torch_peak = None
        if not on_cpu:
            import torch

            # torch's allocator sees only torch tensors; ONNX Runtime and TensorRT allocate their
            # own, which the device-level figure (allocators keep their peak reserved) includes.
            torch_peak = torch.cuda.max_memory_allocated() / 2**20
        return Visit(
            batch=batch,
            samples_ms=tuple(s * 1e3 for s in samples),
            h2d_ms=h2d_ms,
            gpu_torch_peak_mb=torch_peak,
            gpu_device_used_mb=None if device_baseline is None else device_used_mb() - device_baseline,
            process_peak_rss_mb=peak_rss_mb(),
        )
