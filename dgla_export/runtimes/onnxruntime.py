"""ONNX Runtime sessions with the options that matter for this model.

The one requirement is onnxruntime-gpu: on a machine without CUDA it runs on the CPU provider.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from dgla_export.errors import UserError

__all__ = ["Device", "ProviderUnavailableError", "available_cpus", "create_session"]

Device = Literal["cpu", "cuda", "tensorrt"]
_PROVIDERS = {
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
    path: str | Path, device: Device = "cpu", *, threads: int | None = None, **provider_options: Any
) -> Any:
    """An ``InferenceSession`` on ``device``; raises if that provider did not actually load
    (ONNX Runtime silently falls back to CPU, so the loaded providers are checked)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers: list[Any] = list(_PROVIDERS[device])
    if provider_options and device != "cpu":
        providers[0] = (providers[0], provider_options)
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if session.get_providers()[0] != _PROVIDERS[device][0]:
        raise ProviderUnavailableError(
            f"ONNX Runtime could not load {_PROVIDERS[device][0]} (loaded {session.get_providers()}); "
            "it needs a CUDA GPU with CUDA 13 and cuDNN 9 libraries"
        )
    return session
