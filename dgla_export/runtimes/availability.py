"""Why a GPU runtime cannot run here, said before it is tried.

ONNX Runtime falls back to the CPU without saying why, and TensorRT fails late; a user on a
CUDA machine needs the missing piece named: no NVIDIA driver or device, CUDA or cuDNN libraries
of another major version than this ONNX Runtime build was made for, no TensorRT. Each check
returns None when nothing is missing, else one sentence with the fix.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import sys
from pathlib import Path

from dgla_export.install import install_command

__all__ = ["cuda_device_problem", "onnxruntime_gpu_problem", "tensorrt_problem"]

CUDNN_MAJOR = 9  # every onnxruntime-gpu build since 1.19 (CUDA 12 and 13 alike) links cuDNN 9
TENSORRT_EP_MAJOR = 10  # onnxruntime-gpu's TensorRT provider links libnvinfer.so.10 (not 11)


def _pip_library_dirs() -> list[Path]:
    """Folders of NVIDIA's pip-installed CUDA libraries (nvidia-*-cu12/13), which ONNX Runtime
    and torch load from site-packages."""
    roots = [Path(p) / "nvidia" for p in sys.path if p.endswith("site-packages")]
    return [lib for root in roots if root.is_dir() for lib in root.glob("*/lib")]


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return any(any(folder.glob(name + "*")) for folder in _pip_library_dirs())


@functools.lru_cache(maxsize=1)
def cuda_device_problem() -> str | None:
    """No NVIDIA driver, or a driver that sees no device."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 is not found): this machine has no usable CUDA GPU"
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "the NVIDIA driver sees no CUDA device (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    return None


@functools.lru_cache(maxsize=4)
def onnxruntime_gpu_problem(provider: str) -> str | None:
    """Why ONNX Runtime's ``cuda`` or ``tensorrt`` provider would not load here."""
    device = cuda_device_problem()
    if device:
        return device
    if importlib.util.find_spec("onnxruntime") is None:
        return "ONNX Runtime is not installed (pip install onnxruntime-gpu)"
    try:
        from onnxruntime.capi import build_and_package_info as build
    except ImportError:
        return "this ONNX Runtime has no build information; install onnxruntime-gpu (not onnxruntime)"
    cuda = getattr(build, "cuda_version", "")
    if not cuda:
        return "this ONNX Runtime is a CPU build; install onnxruntime-gpu instead of onnxruntime"
    major = cuda.split(".")[0]
    wanted = {
        f"libcudart.so.{major}": f"the CUDA {major} runtime",
        f"libcublas.so.{major}": f"cuBLAS for CUDA {major}",
        f"libcudnn.so.{CUDNN_MAJOR}": f"cuDNN {CUDNN_MAJOR}",
    }
    if provider == "tensorrt":
        wanted[f"libnvinfer.so.{TENSORRT_EP_MAJOR}"] = f"TensorRT {TENSORRT_EP_MAJOR} (its provider links that major)"
    missing = [what for library, what in wanted.items() if not _loadable(library)]
    if missing:
        return (
            f"this onnxruntime-gpu build needs {', '.join(missing)}, which this machine lacks; install them "
            f"(e.g. pip install nvidia-cudnn-cu{major}) or take the onnxruntime-gpu built for your CUDA (see README)"
        )
    return None


@functools.lru_cache(maxsize=1)
def tensorrt_problem() -> str | None:
    """Why a TensorRT engine cannot be built or run here."""
    if importlib.util.find_spec("tensorrt") is None:
        return f"TensorRT is not installed ({install_command('tensorrt')}: NVIDIA's wheel, 10.x or 11.x)"
    device = cuda_device_problem()
    return f"TensorRT is installed, but {device}" if device else None
