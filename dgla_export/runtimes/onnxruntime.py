"""ONNX Runtime: sessions with the options that matter for this model, and its runner.

The one requirement is onnxruntime-gpu: on a machine without CUDA it runs on the CPU provider.
Imports numpy only at module level (onnxruntime inside the functions, torch only for GPU
buffers), so the Triton stand-in that uses it loads no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dgla_export.console import quiet_onnxruntime
from dgla_export.errors import UserError
from dgla_export.runtimes.base import Feed, Outputs, Runner

__all__ = ["Device", "OnnxRuntimeRunner", "ProviderUnavailableError", "available_cpus", "create_session"]

Device = Literal["cpu", "cuda", "tensorrt"]
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class ProviderUnavailableError(UserError, RuntimeError):
    """The requested execution provider did not load (e.g. no GPU, no CUDA libraries)."""


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def create_session(
    path: str | Path,
    device: Device = "cpu",
    *,
    threads: int | None = None,
    spinning: bool | None = None,
    device_id: int = 0,
    **provider_options: Any,
) -> Any:
    """An ``InferenceSession`` on ``device``; raises if that provider did not actually load
    (ONNX Runtime silently falls back to the CPU, so the loaded providers are checked).

    ``spinning`` False stops idle intra-op threads from spinning: on a CPU shared with other
    processes (Triton's preprocessing instances) spinning threads took their cycles."""
    import onnxruntime as ort

    quiet_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    providers: list[Any] = list(PROVIDERS[device])
    if device != "cpu":
        providers = [(p, {"device_id": device_id}) if p != "CPUExecutionProvider" else p for p in providers]
        providers[0] = (providers[0][0], {**providers[0][1], **provider_options})
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if session.get_providers()[0] != PROVIDERS[device][0]:
        raise ProviderUnavailableError(
            f"ONNX Runtime could not load {PROVIDERS[device][0]} (loaded {session.get_providers()}); "
            "it needs a CUDA GPU with the CUDA and cuDNN libraries of this onnxruntime-gpu build"
        )
    return session


class OnnxRuntimeRunner(Runner):
    """An ONNX graph on ONNX Runtime's CPU, CUDA or TensorRT provider; IO binding on a GPU."""

    def __init__(
        self,
        path: str | Path,
        provider: Device = "cpu",
        precision: str = "fp32",
        *,
        threads: int | None = None,
        spinning: bool | None = None,
        device_id: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.path, self.provider, self.precision = Path(path), provider, precision
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.name = f"onnxruntime-{provider}-{precision}"
        self.threads, self.spinning, self.device_id = threads, spinning, device_id
        self.options = dict(options or {})
        self.session: Any = None

    def unavailable(self) -> str | None:
        from dgla_export.runtimes.availability import onnxruntime_gpu_problem

        # ONNX Runtime would silently fall back to its CPU provider: name what is missing instead.
        return None if self.provider == "cpu" else onnxruntime_gpu_problem(self.provider)

    def load(self) -> None:
        self.session = create_session(
            self.path,
            self.provider,
            threads=self.threads,
            spinning=self.spinning,
            device_id=self.device_id,
            **self.options,
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def stage(self, feed: Feed) -> Any:
        if self.device == "cpu":
            return {name: np.ascontiguousarray(feed[name]) for name in self.inputs}
        import torch

        return {name: torch.from_numpy(np.ascontiguousarray(feed[name])).cuda() for name in self.inputs}

    def run(self, staged: Any) -> Any:
        if self.device == "cpu":
            return dict(zip(self.outputs, self.session.run(self.outputs, staged), strict=True))
        binding = self.session.io_binding()
        for name, tensor in staged.items():
            binding.bind_input(name, "cuda", self.device_id, np.float32, list(tensor.shape), tensor.data_ptr())
        for name in self.outputs:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return binding

    def fetch(self, outputs: Any) -> Outputs:
        if self.device == "cpu":
            return outputs
        return dict(zip(self.outputs, outputs.copy_outputs_to_cpu(), strict=True))

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def release(self) -> None:
        self.session = None
