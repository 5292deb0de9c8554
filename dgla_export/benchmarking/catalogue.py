"""The runtimes the bench knows: each a runner of :mod:`dgla_export.runtimes`, the artefact it needs,
and whether it runs by default (only what makes sense on this machine: no emulated BF16, no
torch.compile, whose compile time dwarfs a CPU run, unless asked by name).

On the CPU: ONNX Runtime on every graph given, and OpenVINO on the FP32 graph (FP32, and BF16 where
the CPU computes it natively) and the INT8 graph, each with OpenVINO's latency and throughput hints.
Where OpenVINO is missing, or a CPU lacks BF16, the record says so instead of a figure."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from dgla_export.runtimes.base import Runner

__all__ = ["OPTIONS", "Backend", "catalogue"]

# the command-line option that gives each artefact
OPTIONS = {"fp32": "--onnx", "fp16": "--onnx-fp16", "int8": "--onnx-int8", "engine": "--engine"}


@dataclasses.dataclass(frozen=True)
class Backend:
    """One runtime the bench can measure; ``source`` is what it runs: ``model`` (PyTorch), an ONNX
    graph of a precision (``fp32``, ``fp16``, ``int8``) or the TensorRT ``engine``."""

    name: str
    precision: str
    device: str
    source: str
    default: bool
    variant: str = ""  # torch: eager, channels_last, ...; onnxruntime: the provider; openvino: the hint

    def missing(self, onnx_files: dict[str, Path], engine: Path | None) -> str | None:
        """The artefact this runtime needs and was not given, said as the option that gives it."""
        if self.source == "engine" and engine is None:
            return "no --engine given (build one with dgla-export trt)"
        if self.source in ("fp32", "fp16", "int8") and self.source not in onnx_files:
            return f"no {OPTIONS[self.source]} given"
        return None

    def serving_command(self, onnx_files: dict[str, Path], engine: Path | None) -> str | None:
        """The ``dgla-export triton`` command whose repository serves what this runtime ran (its
        graph, runtime and settings), or None where no repository serves what it measured: PyTorch;
        ONNX Runtime's TensorRT provider in FP32 (a repository's runs it in FP16); OpenVINO's FP32
        on a CPU with BF16 units (Triton's OpenVINO backend computes BF16 there)."""
        from dgla_export.machine import native_bf16

        if self.source == "model" or self.missing(onnx_files, engine):
            return None
        if (self.variant == "tensorrt" and self.precision == "fp32") or (
            self.name.startswith("openvino") and self.precision == "fp32" and native_bf16()
        ):
            return None
        graph = onnx_files.get("fp32" if self.source == "engine" else self.source)
        if graph is None:
            return None
        parts = ["dgla-export triton --onnx", shlex.quote(str(graph))]
        if self.source == "engine":
            parts += ["--engine", shlex.quote(str(engine))]
        if self.name.startswith("openvino"):
            parts.append("--runtime openvino")
            parts += ["--openvino-bf16"] if self.precision == "bf16" else []
            parts += [f"--openvino-hint {self.variant}"] if self.variant != "latency" else []
        if self.variant == "tensorrt":
            parts.append("--ort-tensorrt-fp16")  # ONNX Runtime's TensorRT provider (INT8 from a Q/DQ graph's scales)
        return " ".join([*parts, "--output triton-repo"])

    def runner(self, model: Any, onnx_files: dict[str, Path], engine: Path | None) -> Runner:
        if self.source == "model":
            from dgla_export.runtimes.torch import TorchRunner

            return TorchRunner(model, self.variant, self.device)
        if self.source == "engine":
            from dgla_export.runtimes.tensorrt import TensorRTRunner

            assert engine is not None
            return TensorRTRunner(engine)
        if self.name.startswith("openvino"):
            from dgla_export.runtimes.openvino import OpenVINORunner

            return OpenVINORunner(onnx_files[self.source], self.precision, self.variant)  # type: ignore[arg-type]
        from dgla_export.runtimes.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(
            onnx_files[self.source],
            self.variant,
            self.precision,
            options=_provider_options(self),  # type: ignore[arg-type]
        )

    def unavailable(self, onnx_files: dict[str, Path], engine: Path | None) -> str | None:
        """Why it cannot run here, the missing artefact first."""
        missing = self.missing(onnx_files, engine)
        if missing:
            return missing
        if self.source == "engine":
            from dgla_export.runtimes.availability import tensorrt_problem

            return tensorrt_problem()
        return self.runner(None, {**dict.fromkeys(OPTIONS, Path()), **onnx_files}, None).unavailable()


def _provider_options(backend: Backend) -> dict[str, Any]:
    if backend.variant != "tensorrt":
        return {}
    from dgla_export.io import cache_dir

    # Engines and timings cached on disk: the first load builds (minutes, reported as load_s),
    # later rounds and runs load the cached engine. An INT8 graph carries its own Q/DQ scales (no
    # calibration table); its float layers may run in FP16, as on the engine path.
    cache = cache_dir() / "onnxruntime-tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "trt_fp16_enable": backend.precision in ("fp16", "int8"),
        "trt_int8_enable": backend.precision == "int8",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
    }


def catalogue(devices: list[str], engine: Path | None = None) -> list[Backend]:
    """Every runtime for ``devices``, in the order the bench visits them."""
    from dgla_export.machine import native_bf16
    from dgla_export.runtimes.openvino import HINTS
    from dgla_export.runtimes.torch import variant_precision

    backends: list[Backend] = []
    for device in devices:
        gpu = device == "cuda"
        # TF32 and CUDA graphs exist on NVIDIA GPUs only (None: not in the catalogue); the fastest
        # combination there is fp16+channels_last+cuda-graph
        defaults = {
            "eager": True,
            "tf32": gpu or None,
            "channels_last": True,
            "autocast-fp16": gpu,
            # where the CPU lacks BF16 units torch emulates it: ~12 min a round, only when named
            "autocast-bf16": gpu or native_bf16(),
            "autocast-fp16+channels_last": gpu or None,
            "autocast-fp16+channels_last+cuda-graph": gpu or None,
            "compile": False,
            "autocast-fp16+channels_last+compile": False if gpu else None,
            # a CPU's BF16 (AVX512_BF16, AMX) in torch's fastest layout, and compiled (minutes: only when named)
            "autocast-bf16+channels_last": None if gpu else native_bf16(),
            "autocast-bf16+channels_last+compile": None if gpu else False,
        }
        backends += [
            Backend(f"torch-{v}-{device}", variant_precision(v), device, "model", default, v)
            for v, default in defaults.items()
            if default is not None
        ]
    backends += [Backend(f"onnxruntime-cpu-{p}", p, "cpu", p, True, "cpu") for p in ("fp32", "fp16", "int8")]
    backends += [
        Backend(f"openvino-cpu-{p}" + ("-throughput" if hint == "throughput" else ""), p, "cpu", graph, True, hint)
        for p, graph in (("fp32", "fp32"), ("bf16", "fp32"), ("int8", "int8"))
        for hint in HINTS
    ]
    if "cuda" in devices:
        for provider in ("cuda", "tensorrt"):
            backends += [Backend(f"onnxruntime-{provider}-{p}", p, "cuda", p, True, provider) for p in ("fp32", "fp16")]
        backends.append(Backend("onnxruntime-tensorrt-int8", "int8", "cuda", "int8", True, "tensorrt"))
    if "cuda" in devices or engine is not None:
        backends.append(Backend("tensorrt-engine", "fp16", "cuda", "engine", True))
    return backends
