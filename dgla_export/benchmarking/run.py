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
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from dgla_export.benchmarking.catalogue import Backend
from dgla_export.benchmarking.ceilings import cpu_ceiling, emulated
from dgla_export.benchmarking.results import BackendResult, BenchResult
from dgla_export.benchmarking.timing import (
    Timing,
    Visit,
    device_used_mb,
    gpu_gemm_tflops,
    peak_rss_mb,
    peak_tflops,
    reset_peak_rss,
    sample_seconds,
)
from dgla_export.clinical import ClinicalCheck, Scores, clinical_check, score
from dgla_export.compare import softmax
from dgla_export.console import format_duration
from dgla_export.errors import OptionError
from dgla_export.models.config import ModelConfig
from dgla_export.preprocess import Method, preprocess_batch
from dgla_export.runtimes.base import Runner

__all__ = ["BENCH_COMMAND", "QUICK", "BenchOptions", "Estimate", "VisitCost", "run_bench"]

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


@dataclasses.dataclass(frozen=True)
class VisitCost:
    """Seconds one visit of one runner takes on this host, in the parts a bench run measures.

    ``start_s``: its fresh process's start (spawn, imports, unpickling the job, teardown; 0 in this
    process); ``load_s``: the runner's load (an ONNX Runtime session, an OpenVINO compile);
    ``parity_s``: parity on every image, first visit only; ``timing_s``: the rest of a visit
    (warm-up and samples of every batch size), the same in every round, as each round has the
    same share of the minimums."""

    start_s: float
    load_s: float
    parity_s: float
    timing_s: float

    def seconds(self, visits: int, parity: bool) -> float:
        """``visits`` visits, the first of them with parity where ``parity``."""
        return visits * (self.start_s + self.load_s + self.timing_s) + (self.parity_s if parity else 0.0)


@dataclasses.dataclass
class Estimate:
    """How long a bench run's visits still take, from what the run measured on this host: the
    reference on every image (``reference_s``, its first call's warm-up included, as a first
    visit's parity includes its process's), the reference on one pair once warm
    (``seconds_per_pair``), a probe: a fresh process started as the first runner's visit starts
    (``start_s``: spawn, imports, the runner's pickle, which holds the model for a torch runner;
    ``parity_import_s``: what a first visit's parity then imports; both 0 in this process) and
    each runner's first visit (``measured``).

    The reference's time per pair alone (dgla-bench's estimate before) missed the seconds each
    visit's fresh process takes to start, loads and runtimes slower than eager PyTorch: "about
    1 min 55 s" took 4 min 09 s. A runner not visited yet is taken to cost what the runners
    visited so far cost on average; before the first, what the reference and the probe measured
    (a runtime's own load, an OpenVINO compile, is not known before its visit)."""

    options: BenchOptions
    images: int
    reference_s: float
    seconds_per_pair: float
    start_s: float
    parity_import_s: float
    measured: dict[str, VisitCost] = dataclasses.field(default_factory=dict)

    def guess(self) -> VisitCost:
        """A runner not visited yet: the mean of the runners measured so far; before the first, the
        reference's figures (parity one image at a time, after the same warm-up), loaded at once
        (as the reference is), started as the probe was."""
        if self.measured:
            parts = zip(*(dataclasses.astuple(cost) for cost in self.measured.values()), strict=True)
            return VisitCost(*(statistics.fmean(part) for part in parts))
        timing = sum(_timing_seconds(self.options, batch * self.seconds_per_pair) for batch in self.options.batches)
        parity = self.parity_import_s + max(self.reference_s, self.images * self.seconds_per_pair)
        return VisitCost(self.start_s, 0.0, parity, timing)

    def seconds_left(self, visits_left: dict[str, int]) -> float:
        """The visits still to come, per runner; a runner's first has parity."""
        guess = self.guess()
        return sum(
            self.measured.get(name, guess).seconds(visits, parity=name not in self.measured)
            for name, visits in visits_left.items()
        )


def _timing_seconds(options: BenchOptions, run_s: float) -> float:
    """One visit's warm-up and samples of one batch size at ``run_s`` a run: sampling goes on
    until both of the round's minimums, runs and seconds, are met (as :func:`sample_seconds` does)."""
    per_round = options.min_seconds / options.rounds
    runs = math.ceil(options.min_runs / options.rounds)
    sampled = max(runs * run_s, math.ceil(per_round / run_s) * run_s if run_s > 0 else per_round)
    return options.warmup * run_s + sampled


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
    estimated: Callable[[float], None] = lambda seconds: None,
) -> BenchResult:
    """Parity, then timing, of every runner against the PyTorch FP32 reference.

    ``backends``: each runtime with its runner, or None where it cannot run (its record then says
    why). ``estimated`` hears, as the runners' visits are about to start, how many seconds they
    are estimated to take (see :class:`Estimate`); after each runner's first visit ``progress``
    hears the estimate revised with what that visit measured. With
    ``explain`` (an explained graph among the runners), the reference also holds Grad-CAM of the
    PyTorch model, which every runner's ``cam`` output is compared with."""
    from dgla_export.validation import reference_logits, reference_maps

    config = model.config
    names = tuple(name for name, _ in images)
    arrays = preprocess_batch([image for _, image in images], config, method=preprocess)
    progress(f"PyTorch FP32 reference on {len(names)} images")
    started = time.perf_counter()
    logits = reference_logits(model, arrays)
    reference_s = time.perf_counter() - started
    seconds_per_pair = _seconds_per_pair(functools.partial(reference_logits, model, [array[:1] for array in arrays]))
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
    cpu_precisions = {"fp32"} | {b.precision for b, _ in backends if b.device == "cpu"}
    if "fp16" in cpu_precisions:
        result.cpu_ceilings_skipped["fp16"] = "no FP16 dense kernel is measured on a CPU"
    if any(b.device == "cpu" and r is not None for b, r in backends):
        for precision in (p for p in ("fp32", "bf16", "int8") if p in cpu_precisions):
            if why := emulated(precision):  # an emulated rate is no ceiling
                result.cpu_ceilings_skipped[precision] = why
                continue
            progress(f"CPU {precision.upper()} ceiling: the fastest dense kernel here")
            ceiling = run(functools.partial(cpu_ceiling, precision))
            ceilings["cpu", precision] = ceiling.tflops
            result.cpu_ceilings[precision] = ceiling
    # a GPU's INT8 has no ceiling measured: a share of another precision's would flatter it
    for precision in dict.fromkeys(b.precision for b, r in backends if b.device == "cuda" and r is not None):
        if precision != "int8":
            progress(f"GPU {precision.upper()} GEMM ceiling")
            ceilings["cuda", precision] = result.gpu_gemm_tflops[precision] = run(
                functools.partial(gpu_gemm_tflops, precision)
            )
    runs = [(b, r, record) for (b, r), record in zip(backends, records, strict=True) if r is not None]
    start_s = parity_import_s = 0.0  # in this process a visit starts at once
    if runs and options.isolate:
        progress("a fresh process's start, timed for the estimate")
        started = time.perf_counter()
        try:
            parity_import_s = run(functools.partial(_start_like_a_first_visit, runs[0][1]))
            start_s = time.perf_counter() - started - parity_import_s
        except Exception:  # the runner's own visit will report why its process fails; the estimate goes without
            progress("the probe's process failed: the first estimate counts no process start")
    estimate = Estimate(options, len(names), reference_s, seconds_per_pair, start_s, parity_import_s)
    visits_left = {b.name: options.rounds for b, _, _ in runs}

    def seconds_left() -> float:
        return estimate.seconds_left(
            {b.name: visits_left[b.name] for b, _, record in runs if _visited(record, options)}
        )

    estimated(seconds_left())
    visits: dict[str, list[Visit]] = {b.name: [] for b, _ in backends}
    for round_index in range(options.rounds):
        for backend, runner, record in runs:
            if not _visited(record, options):
                continue
            first = round_index == 0
            progress(
                f"{backend.name}: round {round_index + 1}/{options.rounds}"
                + (f", parity on {len(names)} images" if first else "")
            )
            job = _Visit(runner, reference, options, check_parity=first)
            started = time.perf_counter()
            try:
                outcome = run(job)
            except Exception as err:  # e.g. the runner's process died: report it, go on
                outcome = _Outcome(failed=f"{type(err).__name__}: {err}")
            visits_left[backend.name] -= 1
            visits[backend.name].extend(outcome.visits)
            if first:
                record.load_s, record.details, record.parity = outcome.load_s, outcome.details, outcome.parity
                record.maps, record.cams = outcome.maps, outcome.cams
                record.probabilities, record.scores = outcome.probabilities, outcome.scores
                record.clinical = outcome.clinical
                if outcome.scores is not None and scores is not None:
                    record.scores_delta = outcome.scores.delta(scores)
                if outcome.visits:  # a whole visit: a measure of this runner, and of those not visited yet
                    estimate.measured[backend.name] = outcome.cost(time.perf_counter() - started)
            if outcome.failed:
                record.failed = outcome.failed
                progress(f"{backend.name} failed: {outcome.failed}")
            elif first and not record.passed:
                timed = "timed anyway (--time-failed)" if options.time_failed else "not timed"
                progress(f"{backend.name} failed parity: {'; '.join(record.failures)}; {timed}")
            if first and (left := seconds_left()):
                progress(f"about {format_duration(left)} left (revised with {backend.name}'s first visit)")
    for backend, _, record in runs:
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


def _seconds_per_pair(reference: Callable[[], object]) -> float:
    """The reference on one pair, warm, for the estimate: the median of three runs, or of fewer
    where they take over a second, so that one stall of a busy host does not set the pace of
    every visit estimated from it."""
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < 3 and (not samples or time.perf_counter() - started < 1.0):
        t0 = time.perf_counter()
        reference()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _visited(record: BackendResult, options: BenchOptions) -> bool:
    """Whether a runner that can run is visited (again): not after it failed, nor after it failed
    parity unless ``time_failed``."""
    return not record.failed and (record.parity is None or record.passed or options.time_failed)


def _quiet_process() -> None:
    """What a visit's process does first, as a fresh process starts with every library's chatter on."""
    from dgla_export.console import quiet_libraries

    quiet_libraries(verbose=False)
    warnings.simplefilter("ignore")  # third-party warnings never reach the user


def _start_like_a_first_visit(runner: Runner) -> float:
    """A fresh process started as the first runner's visit starts (``runner`` is only carried: a
    torch runner's pickle holds the model, seconds to pass for the full one), then the import a
    first visit's parity makes, timed here and returned (torch's compiler, seconds, unless the
    model's classes brought it). Timed from outside, the estimate's probe of a visit's start."""
    del runner
    _quiet_process()
    started = time.perf_counter()
    import dgla_export.validation  # noqa: F401

    return time.perf_counter() - started


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
    parity_s: float = 0.0
    busy_s: float = 0.0  # the visit in its process, from its start's end (libraries quietened) to its own

    def cost(self, wall_s: float) -> VisitCost:
        """This visit's parts, ``wall_s`` being its time as the bench saw it (process and all)."""
        load = self.load_s or 0.0
        return VisitCost(wall_s - self.busy_s, load, self.parity_s, max(self.busy_s - load - self.parity_s, 0.0))


@dataclasses.dataclass(frozen=True)
class _Visit:
    """One visit of one runner; picklable, so it can run in a fresh process."""

    runner: Runner
    reference: _Reference
    options: BenchOptions
    check_parity: bool

    def __call__(self) -> _Outcome:
        """The visit, timed from inside its process (the rest of its time is the process's start)."""
        _quiet_process()
        started = time.perf_counter()
        outcome = self._visit()
        outcome.busy_s = time.perf_counter() - started
        return outcome

    def _visit(self) -> _Outcome:
        """Load, (check parity,) time every batch; failures become part of the outcome."""
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
                started = time.perf_counter()
                outcome.details = runner.details()
                self._parity(outcome)
                outcome.parity_s = time.perf_counter() - started
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
