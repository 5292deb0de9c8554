"""Backends behind one small interface. Each says why it cannot run instead of failing late."""

from __future__ import annotations

import abc
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgla_export.models.resnet import ResNet
from dgla_export.runtimes.availability import cuda_device_problem, onnxruntime_gpu_problem, tensorrt_problem

__all__ = ["Backend", "OnnxRuntimeBackend", "TensorRTBackend", "TorchBackend", "default_backends"]


class Backend(abc.ABC):
    """Load once, then ``infer`` a batch of device-resident inputs and return logits."""

    name: str
    precision: str
    device: str
    uses_model = False  # True: ``load`` needs the PyTorch model (others read files)

    def unavailable(self) -> str | None:
        """None if this backend can run here, else the reason it is skipped."""
        return None

    @abc.abstractmethod
    def load(self, model: ResNet | None, onnx_files: dict[str, Path]) -> None: ...

    def stage(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Copy host inputs to where ``infer`` reads them (timed apart from compute)."""
        return tuple(x.to(self.device) for x in inputs)

    @abc.abstractmethod
    def infer(self, staged: tuple[torch.Tensor, ...]) -> np.ndarray: ...

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def details(self) -> dict[str, Any]:
        """Facts about the loaded backend worth recording beside its figures."""
        return {}

    def release(self) -> None:
        """Drop the loaded model so the next backend's memory figures are its own."""
        import gc

        self._drop()
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    @abc.abstractmethod
    def _drop(self) -> None: ...


class TorchBackend(Backend):
    """PyTorch: eager FP32 (the reference), FP16/BF16 autocast, channels_last, torch.compile."""

    uses_model = True

    def __init__(self, variant: str, device: str) -> None:
        self.variant, self.device = variant, device
        self.precision = {"autocast-fp16": "fp16", "autocast-bf16": "bf16"}.get(variant, "fp32")
        self.name = f"torch-{variant}-{device}"
        self.model: ResNet | None = None

    def unavailable(self) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            if torch.version.cuda is None:
                return "this torch is a CPU build; install the CUDA build of torch for your CUDA version"
            return cuda_device_problem() or "no CUDA GPU visible to torch"
        if self.variant == "autocast-fp16" and self.device == "cpu":
            return "FP16 autocast on CPU is emulated (~20 s per pair); use ONNX Runtime for CPU FP16"
        return None

    def load(self, model: ResNet | None, onnx_files: dict[str, Path]) -> None:
        import copy

        assert model is not None
        net = copy.deepcopy(model).to(self.device).eval()
        if self.variant == "channels_last":
            net = net.to(memory_format=torch.channels_last)
        if self.variant == "compile":
            net = torch.compile(net)
        self.model = net

    def stage(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        staged = super().stage(inputs)
        if self.variant == "channels_last":
            staged = tuple(x.contiguous(memory_format=torch.channels_last) for x in staged)
        return staged

    def infer(self, staged: tuple[torch.Tensor, ...]) -> np.ndarray:
        assert self.model is not None
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        autocast = torch.autocast(self.device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return self.model(*staged).float().cpu().numpy()

    def _drop(self) -> None:
        self.model = None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU, CUDA or TensorRT provider; IO binding on GPU."""

    def __init__(self, provider: str, precision: str) -> None:
        self.provider, self.precision = provider, precision
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.name = f"onnxruntime-{provider}-{precision}"
        self.session = None

    def unavailable(self) -> str | None:
        # ONNX Runtime would silently fall back to its CPU provider: name what is missing instead.
        return None if self.provider == "cpu" else onnxruntime_gpu_problem(self.provider)

    def load(self, model: ResNet | None, onnx_files: dict[str, Path]) -> None:
        from dgla_export.io import cache_dir
        from dgla_export.runtimes.onnxruntime import create_session

        if self.precision not in onnx_files:
            raise FileNotFoundError(f"no {self.precision} ONNX file given")
        options: dict[str, object] = {}
        if self.provider == "tensorrt":
            # Engines and timings cached on disk: the first load builds (minutes, reported as
            # load_s), later rounds and runs load the cached engine.
            cache = cache_dir() / "onnxruntime-tensorrt"
            cache.mkdir(parents=True, exist_ok=True)
            # An INT8 graph carries its own Q/DQ scales (no calibration table); its float
            # layers may run in FP16, as on the engine path.
            options = {
                "trt_fp16_enable": self.precision in ("fp16", "int8"),
                "trt_int8_enable": self.precision == "int8",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
            }
        self.session = create_session(onnx_files[self.precision], self.provider, **options)  # type: ignore[arg-type]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def stage(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(x.contiguous().to(self.device) for x in inputs)

    def infer(self, staged: tuple[torch.Tensor, ...]) -> np.ndarray:
        assert self.session is not None
        if self.device == "cpu":
            feed = {name: x.numpy() for name, x in zip(self.input_names, staged, strict=True)}
            return self.session.run(["logits"], feed)[0]
        binding = self.session.io_binding()
        for name, x in zip(self.input_names, staged, strict=True):
            binding.bind_input(name, "cuda", 0, np.float32, list(x.shape), x.data_ptr())
        binding.bind_output("logits", "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _drop(self) -> None:
        self.session = None


class TensorRTBackend(Backend):
    """A TensorRT engine from ``dgla-export trt``, run through :class:`TensorRTRunner`."""

    device = "cuda"

    def __init__(self, engine: Path | None) -> None:
        self.engine = engine
        self.name = "tensorrt-engine"
        self.precision = "fp16"
        self.runner = None

    def unavailable(self) -> str | None:
        if self.engine is None:
            return "no --engine given (build one with dgla-export trt)"
        return tensorrt_problem()

    def load(self, model: ResNet | None, onnx_files: dict[str, Path]) -> None:
        from dgla_export.runtimes.tensorrt import TensorRTRunner

        assert self.engine is not None
        self.runner = TensorRTRunner(self.engine)
        self.precision = self.runner.manifest.precision

    def infer(self, staged: tuple[torch.Tensor, ...]) -> np.ndarray:
        assert self.runner is not None
        outputs = self.runner.infer(dict(zip(self.runner.input_names, staged, strict=True)))
        return outputs["logits"].float().cpu().numpy()

    def details(self) -> dict[str, Any]:
        assert self.runner is not None
        manifest = self.runner.manifest
        return {
            "engine": {
                "build_seconds": manifest.build_seconds,
                "engine_bytes": manifest.engine_bytes,
                "profile": manifest.profile,
                "layer_dtypes": dict(manifest.layer_dtypes),
                "tensorrt_version": manifest.runtime.tensorrt_version,
            }
        }

    def _drop(self) -> None:
        self.runner = None


def default_backends(devices: list[str], engine: Path | None = None) -> list[Backend]:
    backends: list[Backend] = []
    for device in devices:
        backends += [
            TorchBackend(v, device) for v in ("eager", "channels_last", "autocast-fp16", "autocast-bf16", "compile")
        ]
    backends += [OnnxRuntimeBackend("cpu", precision) for precision in ("fp32", "fp16", "int8")]
    if "cuda" in devices:
        backends += [OnnxRuntimeBackend(p, precision) for p in ("cuda", "tensorrt") for precision in ("fp32", "fp16")]
        backends.append(OnnxRuntimeBackend("tensorrt", "int8"))
    if "cuda" in devices or engine is not None:
        backends.append(TensorRTBackend(engine))
    return backends
