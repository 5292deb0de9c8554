"""Facts about this machine and this package that every result records: CPU, GPU, driver, library
versions, package version and commit. The bottom layer: it imports nothing of the package but its
version, and the heavy libraries only inside the functions that read them."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from dgla_export._version import __version__

__all__ = ["commit", "cpu_flags", "driver_version", "machine", "native_bf16", "provenance", "tensorrt_info"]

_LIBRARIES = (
    "torch",
    "onnx",
    "onnxruntime-gpu",
    "onnxruntime",
    "polygraphy",
    "numpy",
    "pillow",
    "pillow-heif",
    "pydicom",
    "nvidia-dali-cuda120",
    "openvino",
    "nncf",
)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """The vector extensions that decide CPU speed here (a VM reports one CPU name for hosts that
    differ twofold: AVX2 only, or AVX-512 with VNNI and BF16)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = set(next((line for line in handle if line.startswith("flags")), "").split())
    except OSError:
        return []
    return [flag for flag in _ISA_FLAGS if flag in flags]


def native_bf16() -> bool:
    """Whether this CPU computes BF16 in hardware (AVX512_BF16 or AMX) rather than emulating it."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def machine() -> dict[str, Any]:
    """CPU and its vector extensions, cores, Python, the versions of the libraries that produce
    numbers, and the GPU if torch sees one."""
    record: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cpu_flags": cpu_flags(),
        "cpu_native_bf16": native_bf16(),
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    for name in _LIBRARIES:
        try:
            record[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import torch
    except ImportError:
        return record
    record["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
        record["cuda"] = torch.version.cuda
        record["driver"] = driver_version()
    return record


def driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi (first GPU), or None without one."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The git commit of the checkout this package runs from (``+dirty`` with uncommitted changes),
    or None for an installed package: read where the code is, not where the command runs."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty.strip() else "")


def provenance() -> dict[str, Any]:
    """What every recorded result carries: the package version and commit that produced it, and the machine."""
    return {"package_version": __version__, "commit": commit() or "not a git checkout", "machine": machine()}


def tensorrt_info() -> dict[str, str | None]:
    """The running TensorRT and GPU as an engine cares about them (needs TensorRT and torch with CUDA)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": f"{major}{minor}",
        "cuda_version": torch.version.cuda,
        "driver_version": driver_version(),
    }
