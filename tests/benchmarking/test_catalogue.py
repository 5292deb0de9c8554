"""The bench's catalogue: what runs where by default, and in which arithmetic."""

from __future__ import annotations

from dgla_export.benchmarking.catalogue import catalogue


def test_a_gpu_gets_strict_fp32_tf32_and_the_fast_combination_by_default() -> None:
    gpu = {b.name: b for b in catalogue(["cuda"]) if b.source == "model"}
    assert gpu["torch-eager-cuda"].precision == "fp32" and gpu["torch-tf32-cuda"].precision == "tf32"
    fast = gpu["torch-autocast-fp16+channels_last+cuda-graph-cuda"]
    assert (fast.precision, fast.default, fast.variant) == ("fp16", True, "autocast-fp16+channels_last+cuda-graph")
    assert not gpu["torch-compile-cuda"].default and not gpu["torch-autocast-fp16+channels_last+compile-cuda"].default


def test_a_cpu_is_offered_no_gpu_only_variant_and_its_bf16_in_torchs_fast_layout(monkeypatch) -> None:
    import dgla_export.machine

    for native in (True, False):
        monkeypatch.setattr(dgla_export.machine, "native_bf16", lambda native=native: native)
        cpu = {b.name: b for b in catalogue(["cpu"]) if b.source == "model"}
        assert cpu and not [n for n in cpu if "tf32" in n or "cuda-graph" in n or "fp16+" in n], list(cpu)
        fast = cpu["torch-autocast-bf16+channels_last-cpu"]
        assert (fast.precision, fast.default) == ("bf16", native)  # emulated BF16 takes minutes a pair: named only
        assert not cpu["torch-autocast-bf16+channels_last+compile-cpu"].default
