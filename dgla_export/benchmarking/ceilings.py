"""The CPU's ceilings: per precision, the fastest dense kernel this machine runs, in the same run.

A bench row's "of GEMM" says how much of the machine a runner uses; that share is honest only
against what the machine can do. No datasheet peak is known for a CPU (clocks vary, VMs hide the
model), so each precision's ceiling is the fastest of the dense matrix products the libraries here
offer, measured on the same cores in the same run: numpy's BLAS, torch's (MKL, oneDNN), ONNX
Runtime's MatMul (MatMulInteger for INT8) and OpenVINO's MatMul (BF16 through its precision hint).
One library's kernel alone is no ceiling: numpy's BLAS reached 89 GFLOP/s on a host where torch's
reached 430, and every FP32 row read 200-410% of it. A library that is not installed is skipped; a
precision the CPU only emulates gets no ceiling (an emulated rate would flatter every row). The
record names the kernel that set each ceiling and every rate measured.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import numpy as np

from dgla_export.machine import cpu_flags

__all__ = ["KERNELS", "Ceiling", "cpu_ceiling", "emulated"]

KERNELS: dict[str, tuple[str, ...]] = {
    "fp32": ("numpy", "torch", "onnxruntime", "openvino"),
    "bf16": ("torch", "openvino"),
    "int8": ("onnxruntime",),
}
NATIVE = {"bf16": {"avx512_bf16", "amx_bf16"}, "int8": {"avx512_vnni", "avx_vnni", "amx_int8"}}


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """Every kernel's rate at one precision (TFLOP/s; TOP/s for INT8) and the fastest: the ceiling.
    ``missing``: kernel -> why it was not measured (not installed, or it failed)."""

    precision: str
    rates: dict[str, float]
    missing: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def tflops(self) -> float:
        return max(self.rates.values())

    @property
    def kernel(self) -> str:
        return max(self.rates, key=self.rates.__getitem__)

    def describe(self) -> str:
        unit = "GOP/s" if self.precision == "int8" else "GFLOP/s"
        others = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in self.rates.items() if k != self.kernel)
        return f"{self.tflops * 1e3:.0f} {unit} ({self.kernel}'s{'; ' + others if others else ''})"


def emulated(precision: str) -> str | None:
    """Why this CPU has no ``precision`` ceiling (it emulates it), or None where it is native."""
    needed = NATIVE.get(precision)
    if needed is None or needed & set(cpu_flags()):
        return None
    return f"this CPU has no native {precision.upper()} (flags: {', '.join(cpu_flags()) or 'none'})"


@functools.lru_cache(maxsize=4)
def cpu_ceiling(precision: str = "fp32", size: int = 3072, repeats: int = 2) -> Ceiling:
    """The best of ``repeats`` size^3 products (after a warm-up) of every kernel of ``precision``."""
    rates, missing = {}, {}
    for kernel in KERNELS[precision]:
        try:
            product = _KERNELS[kernel](precision, size)
        except ImportError as err:
            missing[kernel] = f"not installed ({err.name or err})"
            continue
        try:
            rates[kernel] = _rate(product, size, repeats)
        except Exception as err:  # a library's kernel that fails here is no ceiling; the others stand
            missing[kernel] = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    if not rates:
        raise RuntimeError(f"no {precision} dense kernel ran here: {missing}")
    return Ceiling(precision, rates, missing)


def _rate(product: Callable[[], object], size: int, repeats: int) -> float:
    product()  # warm-up: threads, packing, the first allocation
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e12


def _matrix(size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)


def _numpy(precision: str, size: int) -> Callable[[], object]:
    a = _matrix(size)
    return lambda: a @ a


def _torch(precision: str, size: int) -> Callable[[], object]:
    import torch

    a = torch.from_numpy(_matrix(size))
    a = a.to(torch.bfloat16) if precision == "bf16" else a
    return lambda: a @ a


def _onnxruntime(precision: str, size: int) -> Callable[[], object]:
    """One MatMul (FP32) or MatMulInteger (INT8: uint8 x int8 -> int32, what a Q/DQ graph's
    integer layers run), the second operand an initializer as a network's weights are."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    if precision == "int8":
        rng = np.random.default_rng(0)
        a = rng.integers(0, 255, (size, size), dtype=np.uint8)
        b = rng.integers(-127, 127, (size, size), dtype=np.int8)
        node, kinds = helper.make_node("MatMulInteger", ["a", "b"], ["c"]), (TensorProto.UINT8, TensorProto.INT32)
    else:
        a = b = _matrix(size)
        node, kinds = helper.make_node("MatMul", ["a", "b"], ["c"]), (TensorProto.FLOAT, TensorProto.FLOAT)
    graph = helper.make_graph(
        [node], "ceiling", [helper.make_tensor_value_info("a", kinds[0], [size, size])],
        [helper.make_tensor_value_info("c", kinds[1], [size, size])], [numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def _openvino(precision: str, size: int) -> Callable[[], object]:
    """One MatMul against a constant, compiled for the CPU at ``precision`` (OpenVINO's precision
    hint: BF16 runs its AMX or AVX512_BF16 kernels)."""
    from dgla_export.runtimes.openvino import import_openvino

    ov = import_openvino()
    import openvino.opset13 as ops

    a = _matrix(size)
    parameter = ops.parameter([size, size], ov.Type.f32, name="a")
    model = ov.Model([ops.matmul(parameter, ops.constant(a), False, False)], [parameter], "ceiling")
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()
    return lambda: request.infer({0: a})


_KERNELS: dict[str, Callable[[str, int], Callable[[], object]]] = {
    "numpy": _numpy,
    "torch": _torch,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
}
