"""Where a result came from: machine, library versions, commit. Recorded with every result."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

__all__ = ["commit", "driver_version", "machine", "machine_and_commit"]


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    record: dict[str, Any] = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for name in ("onnx", "onnxruntime", "polygraphy", "numpy"):
        try:
            record[name] = __import__(name).__version__
        except ImportError:
            record[name] = None
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


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout
        return sha + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_and_commit() -> dict[str, Any]:
    return {"machine": machine(), "commit": commit()}
