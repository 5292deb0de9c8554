"""What a bench run produces, as records: per runner, its parity, scores and timings; for the run,
the reference and the provenance. ``to_dict()`` gives the layout of ``results.json``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from dgla_export.benchmarking.ceilings import Ceiling
from dgla_export.benchmarking.timing import Timing
from dgla_export.clinical import ClinicalCheck, Scores
from dgla_export.compare import Comparison, MapComparison

__all__ = ["BackendResult", "BenchResult", "Recommendation"]


@dataclasses.dataclass
class BackendResult:
    """One runner: skipped (with why), failed (with the error), or measured."""

    backend: str
    precision: str
    device: str
    skipped: str | None = None
    failed: str | None = None
    load_s: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    parity: Comparison | None = None
    maps: MapComparison | None = None  # an explained graph's maps against the reference Grad-CAM
    cams: np.ndarray | None = dataclasses.field(default=None, repr=False)  # (N, classes, h, w), for overlays
    probabilities: list[list[float]] | None = None
    scores: Scores | None = None
    scores_delta: dict[str, Any] | None = None
    clinical: ClinicalCheck | None = None  # with labels: judged on the clinical scores next to the reference
    timing: list[Timing] = dataclasses.field(default_factory=list)
    serving_command: str | None = None  # the `dgla-export triton` command that serves it (None: PyTorch)

    @property
    def measured(self) -> bool:
        return self.parity is not None and self.failed is None and self.skipped is None

    @property
    def passed(self) -> bool:
        return self.parity is not None and not self.failures

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(
            f for check in (self.parity, self.maps, self.clinical) if check is not None for f in check.failures
        )

    @property
    def verdict(self) -> str:
        """'passed' or 'failed' (parity), or 'not validated' where it was skipped or never ran."""
        return "not validated" if self.parity is None else ("passed" if self.passed else "failed")

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "backend": self.backend,
            "precision": self.precision,
            "device": self.device,
            "verdict": self.verdict,
        }
        for key in ("skipped", "failed", "load_s", "serving_command"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        record.update(self.details)
        if self.parity is not None:
            record["parity"] = self.parity.to_dict()
            if self.maps is not None:
                record["maps"] = self.maps.to_dict()
            record["probabilities"] = self.probabilities
        if self.scores is not None:
            record["metrics"] = self.scores.to_dict()
            record["metrics_delta"] = self.scores_delta
        if self.clinical is not None:
            record["clinical"] = self.clinical.to_dict()
        if self.timing:
            record["timing"] = [t.to_dict() for t in self.timing]
        return record


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The fastest runner on one device among those that passed parity: for ``latency`` the lowest
    p50 at the smallest batch timed, for ``throughput`` the most pairs/s at the largest; beside
    ONNX Runtime FP32 on that device and batch (the package's default path), where it ran."""

    device: str
    goal: str  # latency or throughput
    backend: str
    precision: str
    batch: int
    p50_ms: float
    throughput_pairs_s: float
    speedup_vs_onnxruntime_fp32: float | None
    ceiling_fraction: float | None  # of the same-run GEMM ceiling of its device and precision
    # the command that serves it; where nothing serves it as measured (PyTorch), the fastest served runner's
    serving_command: str | None = None
    served_instead: str | None = None  # that runner, where the recommended one is not served as measured

    def describe(self) -> str:
        speedup = self.speedup_vs_onnxruntime_fp32
        versus = f", {speedup:.2f}x ONNX Runtime FP32" if speedup else ""
        figure = f"p50 {self.p50_ms:.1f} ms" if self.goal == "latency" else f"{self.throughput_pairs_s:.2f} pairs/s"
        line = f"{self.device} {self.goal}: {self.backend} ({figure} at batch {self.batch}{versus})"
        if self.serving_command is None:
            return line
        if self.served_instead:
            line += f"; not served as measured, the fastest runner that is and passed: {self.served_instead}"
        return f"{line}; serve it: {self.serving_command}"


@dataclasses.dataclass
class BenchResult:
    """A whole run: the reference (PyTorch FP32 on the images), every runner, where it ran."""

    model: str
    class_names: tuple[str, ...]
    images: tuple[str, ...]
    macs_per_pair: int
    options: dict[str, Any]
    reference_probabilities: list[list[float]]
    backends: list[BackendResult]
    reference_scores: Scores | None = None
    reference_cams: np.ndarray | None = dataclasses.field(default=None, repr=False)  # Grad-CAM, for overlays
    # per CPU precision of the run: every dense kernel's rate and the fastest (:mod:`.ceilings`), or why none
    cpu_ceilings: dict[str, Ceiling] = dataclasses.field(default_factory=dict)
    cpu_ceilings_skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    gpu_gemm_tflops: dict[str, float] = dataclasses.field(default_factory=dict)  # per precision of the GPU runners
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def cpu_fp32_gemm_tflops(self) -> float | None:
        return self.cpu_ceilings["fp32"].tflops if "fp32" in self.cpu_ceilings else None

    @property
    def cpu_bf16_gemm_tflops(self) -> float | None:
        return self.cpu_ceilings["bf16"].tflops if "bf16" in self.cpu_ceilings else None

    @property
    def cpu_bf16_gemm_skipped(self) -> str | None:
        """Why no BF16 ceiling, where a BF16 runner was asked for."""
        return self.cpu_ceilings_skipped.get("bf16")

    @property
    def failed(self) -> list[str]:
        return [b.backend for b in self.backends if b.failed]

    @property
    def parity_failed(self) -> list[str]:
        return [b.backend for b in self.backends if b.parity is not None and not b.passed]

    def recommendations(self) -> list[Recommendation]:
        """Per device, the fastest runner for latency and for throughput among those that passed
        parity: a runner that failed is never ranked, however fast."""
        found = []
        for device in dict.fromkeys(b.device for b in self.backends):
            timed = [b for b in self.backends if b.device == device and b.passed and b.timing]
            if not timed:
                continue
            base = {t.batch: t for b in timed if b.backend == f"onnxruntime-{device}-fp32" for t in b.timing}
            latency = min(timed, key=lambda b: b.timing[0].p50_ms)
            throughput = max(timed, key=lambda b: b.timing[-1].throughput_pairs_s)
            servable = [b for b in timed if b.serving_command]
            served = {
                "latency": min(servable, key=lambda b: b.timing[0].p50_ms, default=None),
                "throughput": max(servable, key=lambda b: b.timing[-1].throughput_pairs_s, default=None),
            }
            for goal, backend, timing in (
                ("latency", latency, latency.timing[0]),
                ("throughput", throughput, throughput.timing[-1]),
            ):
                reference = base.get(timing.batch)
                speedup = reference.p50_ms / timing.p50_ms if reference else None
                instead = served[goal] if backend.serving_command is None else None
                found.append(
                    Recommendation(
                        device=device,
                        goal=goal,
                        backend=backend.backend,
                        precision=backend.precision,
                        batch=timing.batch,
                        p50_ms=timing.p50_ms,
                        throughput_pairs_s=timing.throughput_pairs_s,
                        speedup_vs_onnxruntime_fp32=speedup,
                        ceiling_fraction=timing.gemm_fraction,
                        serving_command=(instead or backend).serving_command,
                        served_instead=instead.backend if instead else None,
                    )
                )
        return found

    def measured(self) -> Sequence[BackendResult]:
        return [b for b in self.backends if b.measured]

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            **self.provenance,
            "model": self.model,
            "class_names": list(self.class_names),
            "images": list(self.images),
            "macs_per_pair": self.macs_per_pair,
            "options": self.options,
        }
        if self.reference_scores is not None:
            record["reference_metrics"] = self.reference_scores.to_dict()
        record["reference_probabilities"] = self.reference_probabilities
        for key in ("cpu_fp32_gemm_tflops", "cpu_bf16_gemm_tflops", "cpu_bf16_gemm_skipped"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        if self.cpu_ceilings:  # which kernel set each ceiling, and what every kernel reached
            record["cpu_ceilings"] = {
                precision: {"tflops": c.tflops, "kernel": c.kernel, "rates": c.rates, "missing": c.missing}
                for precision, c in self.cpu_ceilings.items()
            }
        if self.cpu_ceilings_skipped:
            record["cpu_ceilings_skipped"] = self.cpu_ceilings_skipped
        if self.gpu_gemm_tflops:
            record["gpu_gemm_tflops"] = self.gpu_gemm_tflops
        record["recommendation"] = [dataclasses.asdict(r) for r in self.recommendations()]
        record["backends"] = [b.to_dict() for b in self.backends]
        return record
