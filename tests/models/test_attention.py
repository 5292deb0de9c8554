"""Vectorised HVA/LA/GLA equal the spec's loop form (tests/reference.py) in FP32."""

from __future__ import annotations

import pytest
import reference
import torch
import torch.nn.functional as F

from dgla_export.models.attention import (
    GlobalLocalAttention,
    HorizontalAttention,
    VerticalAttention,
    interpolation_matrix,
)

SIZES = [56, 28, 14, 7, 9, 1]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.numel() == 1:
                p.fill_(0.7 if "gamma" not in name else 1.3)  # alpha/beta/gamma non-zero
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= 1e-5 * scale, f"{what}: max abs diff {err:.3e} > 1e-5 x output scale {scale:.3e}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("rect", [False, True])
def test_axis_attention_matches_loop_reference(size: int, rect: bool) -> None:
    height, width = size, (size + 5 if rect else size)  # rectangular maps catch swapped axes
    torch.manual_seed(size)
    x = torch.randn(2, 16, height, width)
    for cls, loop, scalar in (
        (HorizontalAttention, reference.horizontal_loop, "alpha"),
        (VerticalAttention, reference.vertical_loop, "beta"),
    ):
        module = cls(16).eval()
        _randomise(module, size)
        with torch.no_grad():
            actual = module(x)
            expected = loop(x, module.query.weight, module.key.weight, module.value.weight, getattr(module, scalar))
        _assert_close(actual, expected, f"{cls.__name__} at {height}x{width}")
        assert (actual - x).abs().max() > 1e-3, "attention contributed nothing"


@pytest.mark.parametrize("size", SIZES)
def test_gla_matches_reference(size: int) -> None:
    module = GlobalLocalAttention(16).eval()
    _randomise(module, 100 + size)
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 16, size, size)
    state = {f"gla.{k}": v for k, v in module.state_dict().items()}
    with torch.no_grad():
        _assert_close(module(x), reference.gla(x, state, "gla"), f"GLA at {size}x{size}")


@pytest.mark.parametrize(("n_out", "n_in"), [(28, 56), (4, 7), (5, 9), (1, 1), (56, 28), (7, 4), (1, 2)])
def test_interpolation_matrix_equals_interpolate(n_out: int, n_in: int) -> None:
    x = torch.randn(1, 3, n_in, n_in + 2)
    rows = interpolation_matrix(n_out, n_in)
    cols = interpolation_matrix(n_out + 1, n_in + 2)
    expected = F.interpolate(x, size=(n_out, n_out + 1), mode="bilinear", align_corners=True)
    _assert_close(rows @ x @ cols.t(), expected, f"resize {n_in}->{n_out}")


def test_odd_size_mapping_selects_even_positions() -> None:
    # Spec: with align_corners=True, n -> ceil(n/2) samples exactly 0, 2, 4, ... for odd n.
    matrix = interpolation_matrix(4, 7)
    assert torch.equal(matrix, torch.eye(7)[0::2])


def test_hva_graph_does_not_grow_with_size() -> None:
    # Article defect 4: a Python loop over rows adds ops per row. The exported program of one
    # attention call must have the same op count at 8x8 and 32x32.
    def op_count(size: int) -> int:
        module = HorizontalAttention(8).eval()
        program = torch.export.export(module, (torch.randn(1, 8, size, size),))
        return sum(1 for node in program.graph.nodes if node.op == "call_function")

    assert op_count(8) == op_count(32)
