"""How the bench times and what it measures beside time: the sampling loop, pooled statistics,
peak memory, and the ceilings utilisation is measured against (datasheet peaks on a GPU, a GEMM
measured in the same run on a CPU)."""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "PEAK_TFLOPS",
    "Timing",
    "Visit",
    "device_used_mb",
    "gpu_gemm_tflops",
    "peak_rss_mb",
    "peak_tflops",
    "reset_peak_rss",
    "sample_seconds",
]

# Dense peak TFLOP/s by GPU name fragment and precision (NVIDIA datasheets, SXM parts);
# fp32 is the non-tensor-core figure, tf32 the dense tensor-core one (the datasheets print it with
# sparsity, twice this). MFU is reported only where the device is listed here.
PEAK_TFLOPS = {
    "H100": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.0, "bf16": 989.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.0, "bf16": 989.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
}


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


@dataclasses.dataclass(frozen=True)
class Visit:
    """One round's measurement of one batch size: raw samples and memory figures."""

    batch: int
    samples_ms: tuple[float, ...]
    h2d_ms: float
    gpu_torch_peak_mb: float | None
    gpu_device_used_mb: float | None
    process_peak_rss_mb: float | None


@dataclasses.dataclass(frozen=True)
class Timing:
    """One batch size's samples pooled over every round; memory is the largest seen."""

    batch: int
    rounds: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    round_p50_ms: tuple[float, ...]
    throughput_pairs_s: float
    h2d_ms: float
    achieved_tflops: float
    mfu: float | None
    gemm_fraction: float | None  # of the same run's GEMM ceiling on this device and precision
    gpu_torch_peak_mb: float | None
    gpu_device_used_mb: float | None
    process_peak_rss_mb: float | None
    speedup_vs_torch_eager: float | None = None

    @classmethod
    def pool(cls, visits: Sequence[Visit], flops_per_pair: int, peak: float | None, gemm: float | None) -> Timing:
        batch = visits[0].batch
        samples = np.concatenate([v.samples_ms for v in visits])
        p50 = float(np.percentile(samples, 50))
        achieved = flops_per_pair * batch / (p50 / 1e3) / 1e12

        def largest(key: str) -> float | None:
            values = [getattr(v, key) for v in visits if getattr(v, key) is not None]
            return max(values) if values else None

        return cls(
            batch=batch,
            rounds=len(visits),
            runs=len(samples),
            p50_ms=p50,
            p90_ms=float(np.percentile(samples, 90)),
            p99_ms=float(np.percentile(samples, 99)),
            round_p50_ms=tuple(float(np.median(v.samples_ms)) for v in visits),
            throughput_pairs_s=batch / (p50 / 1e3),
            h2d_ms=float(np.median([v.h2d_ms for v in visits])),
            achieved_tflops=achieved,
            mfu=achieved / peak if peak else None,
            gemm_fraction=achieved / gemm if gemm else None,
            gpu_torch_peak_mb=largest("gpu_torch_peak_mb"),
            gpu_device_used_mb=largest("gpu_device_used_mb"),
            process_peak_rss_mb=largest("process_peak_rss_mb"),
        )

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["round_p50_ms"] = list(self.round_p50_ms)
        return record


def peak_tflops(device: str, precision: str) -> float | None:
    """The datasheet peak of this GPU at ``precision``, where it is listed."""
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((table.get(precision) for key, table in PEAK_TFLOPS.items() if key in name), None)


def gpu_gemm_tflops(precision: str, size: int = 8192, repeats: int = 10) -> float:
    """TFLOP/s of a size^3 matrix product on the current GPU at ``precision`` (fp32 strictly, tf32,
    fp16, bf16; random normal data, which draws more power than zeros): the mean of ``repeats``
    timed by CUDA events after three warm-ups. The same-run ceiling GPU runners are held against,
    as a datasheet peak is one this clock, power cap and driver may never reach."""
    import torch

    from dgla_export.runtimes.torch import HALF_DTYPES, fp32_math

    dtype = HALF_DTYPES.get(precision, torch.float32)
    a = torch.randn(size, size, device="cuda", generator=torch.Generator("cuda").manual_seed(0)).to(dtype)
    with fp32_math(precision == "tf32"):
        for _ in range(3):
            a @ a
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            a @ a
        end.record()
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def device_used_mb() -> float:
    """Memory in use on the current GPU (all processes), from cudaMemGetInfo."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter (Linux) so that each batch reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
