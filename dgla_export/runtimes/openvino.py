"""OpenVINO on the CPU: the exported ONNX graphs (FP32, INT8 Q/DQ) as they are, in FP32 or BF16.

The CPU path a clinic PC without an NVIDIA GPU runs. OpenVINO reads the graph this package wrote
and validated (no conversion step, no second artefact to check). Its CPU plugin computes in BF16 by
default where the CPU has native BF16 units, so the precision is always set explicitly: ``fp32``
and ``int8`` (the float layers of a Q/DQ graph) in FP32, ``bf16`` only where OpenVINO reports the
CPU computes it natively; elsewhere it would silently run FP32, so it is refused with one line.

Throughput hint: the batch is split over OpenVINO's optimal number of infer requests, run at once
(its streams), as a server with that many requests in flight would. Imports numpy only at module
level, so the Triton stand-in that uses it loads no torch. OpenVINO is imported without its usage
telemetry (:func:`import_openvino`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dgla_export.install import install_command
from dgla_export.runtimes.base import Feed, Runner
from dgla_export.runtimes.onnxruntime import available_cpus

__all__ = ["HINTS", "PRECISIONS", "OpenVINORunner", "cpu_capabilities", "import_openvino", "openvino_problem"]

Precision = Literal["fp32", "bf16", "int8"]
Hint = Literal["latency", "throughput"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
HINTS: tuple[Hint, ...] = ("latency", "throughput")
INSTALL_HINT = install_command("openvino")
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def import_openvino() -> Any:
    """OpenVINO without its usage telemetry. Importing openvino (2026.4) imports its model
    converter, which sends a usage event and writes a client ID under ~/intel unless the users'
    consent file says no; NNCF does the same. Both fall back to a stub where the telemetry package
    cannot be imported, so it is hidden from them before OpenVINO is imported: this package imports
    OpenVINO only through here. (Where the caller's process imported OpenVINO earlier, that import
    has already sent its event.)"""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    return importlib.import_module("openvino")


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin says this CPU computes natively (FP32, BF16, INT8, ...)."""
    openvino = import_openvino()
    return tuple(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_problem(precision: str = "fp32") -> str | None:
    """None if OpenVINO can run ``precision`` here, else why not (one sentence with the fix)."""
    if importlib.util.find_spec("openvino") is None:
        return f"OpenVINO is not installed ({INSTALL_HINT})"
    if precision not in PRECISIONS:
        return f"OpenVINO runs the fp32 and int8 graphs (fp32, bf16 or int8), not {precision}"
    if precision == "bf16" and "BF16" not in cpu_capabilities():
        from dgla_export.machine import cpu_flags

        return (
            f"this CPU has no native BF16 (OpenVINO: {', '.join(cpu_capabilities())}; flags: "
            f"{', '.join(cpu_flags()) or 'none read'}), so BF16 would silently run as FP32; run fp32 or int8 "
            "here, BF16 on a CPU with AVX512_BF16 or AMX"
        )
    return None


class OpenVINORunner(Runner):
    """An ONNX graph on OpenVINO's CPU plugin, at one inference precision and performance hint."""

    def __init__(
        self, path: str | Path, precision: Precision = "fp32", hint: Hint = "latency", *, threads: int | None = None
    ) -> None:
        self.path, self.precision, self.hint, self.threads = Path(path), precision, hint, threads
        self.name = f"openvino-cpu-{precision}" + ("-throughput" if hint == "throughput" else "")
        self.compiled: Any = None
        self.requests: list[Any] = []

    def unavailable(self) -> str | None:
        return openvino_problem(self.precision)

    def load(self) -> None:
        openvino = import_openvino()
        problem = self.unavailable()
        if problem:
            raise RuntimeError(problem)
        core = openvino.Core()
        properties = {
            "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[self.precision],
            "PERFORMANCE_HINT": self.hint.upper(),
            "INFERENCE_NUM_THREADS": self.threads or available_cpus(),
        }
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", properties)
        count = 1 if self.hint == "latency" else int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.requests = [self.compiled.create_infer_request() for _ in range(count)]
        self.inputs = [port.get_any_name() for port in self.compiled.inputs]
        self.outputs = [port.get_any_name() for port in self.compiled.outputs]

    def stage(self, feed: Feed) -> Any:
        return {name: np.ascontiguousarray(feed[name]) for name in self.inputs}

    def run(self, staged: Any) -> Any:
        count = len(staged[self.inputs[0]])
        parts = np.array_split(np.arange(count), min(count, len(self.requests)))
        for request, part in zip(self.requests, parts, strict=False):
            request.start_async({name: array[part[0] : part[-1] + 1] for name, array in staged.items()})
        answers = []
        for request, _ in zip(self.requests, parts, strict=False):
            request.wait()
            # the request's buffers are reused by its next call: copy out
            answers.append({name: request.get_tensor(name).data.copy() for name in self.outputs})
        return {name: np.concatenate([answer[name] for answer in answers]) for name in self.outputs}

    def details(self) -> dict[str, Any]:
        openvino = import_openvino()
        return {
            "openvino": openvino.get_version(),
            "inference_precision": self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "performance_hint": self.hint,
            "streams": int(self.compiled.get_property("NUM_STREAMS")),
            "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            "infer_requests": len(self.requests),
            "cpu_capabilities": list(cpu_capabilities()),
        }

    def release(self) -> None:
        self.requests, self.compiled = [], None
