"""The CPU's ceilings: every dense kernel of a precision measured, the fastest is the ceiling, a
kernel that is missing or fails is named and the others stand, an emulated precision has none."""

from __future__ import annotations

import pytest

from dgla_export.benchmarking import ceilings


def test_the_fastest_kernel_sets_the_ceiling_and_every_rate_is_kept(monkeypatch) -> None:
    def missing(precision: str, size: int):
        raise ImportError("no module", name="openvino")

    def failing(precision: str, size: int):
        return lambda: (_ for _ in ()).throw(RuntimeError("kernel refused\nsecond line"))

    monkeypatch.setitem(ceilings._KERNELS, "openvino", missing)
    monkeypatch.setitem(ceilings._KERNELS, "onnxruntime", failing)
    ceiling = ceilings.cpu_ceiling.__wrapped__("fp32", size=256, repeats=1)
    print(ceiling.describe(), ceiling.missing)
    assert set(ceiling.rates) == {"numpy", "torch"} and all(rate > 0 for rate in ceiling.rates.values())
    assert ceiling.tflops == max(ceiling.rates.values()) and ceiling.rates[ceiling.kernel] == ceiling.tflops
    assert ceiling.missing == {"openvino": "not installed (openvino)", "onnxruntime": "RuntimeError: kernel refused"}
    assert ceiling.describe().startswith(f"{ceiling.tflops * 1e3:.0f} GFLOP/s ({ceiling.kernel}'s; ")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_each_library_kernel_runs_here(precision) -> None:
    """ONNX Runtime's MatMul and MatMulInteger and OpenVINO's MatMul, built as the ceiling builds them."""
    for kernel in ceilings.KERNELS[precision]:
        pytest.importorskip(kernel)  # OpenVINO is an extra
        product = ceilings._KERNELS[kernel](precision, 64)
        assert product() is not None, kernel


def test_an_emulated_precision_has_no_ceiling(monkeypatch) -> None:
    monkeypatch.setattr(ceilings, "cpu_flags", lambda: ["avx2", "fma"])
    assert "no native BF16 (flags: avx2, fma)" in ceilings.emulated("bf16")
    assert "no native INT8" in ceilings.emulated("int8") and ceilings.emulated("fp32") is None
    monkeypatch.setattr(ceilings, "cpu_flags", lambda: ["avx512f", "avx512_vnni", "amx_bf16"])
    assert ceilings.emulated("bf16") is None and ceilings.emulated("int8") is None
