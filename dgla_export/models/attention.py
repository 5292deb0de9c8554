"""Global-local attention (GLA) of DGLA-ResNet50, as the spec defines it.

The horizontal-vertical attention (HVA) is written as batched matrix products:
- the bilinear ``align_corners=True`` "mapping" and "unmapping" are separable, so each is a
  product with a constant interpolation matrix per axis (exact, because spatial sizes are
  static); the exported graph then has MatMul with constant weights instead of Resize nodes
  whose sizes a dynamic batch would compute at run time;
- the energies of every query against its key row (column) are one 4-D MatMul, followed by
  one Softmax over the last axis.

Energies, softmaxes and reductions always run in FP32, also when the surrounding network is
FP16: they are the places where FP16 overflows (energies reached 10^4 with demo weights) or
underflows (a softmax over 3,136 positions). The casts are no-ops in an FP32 model.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

__all__ = [
    "GlobalLocalAttention",
    "HorizontalAttention",
    "LocalAttention",
    "VerticalAttention",
    "interpolation_matrix",
    "mapped_size",
    "observe_attention_energy",
    "widen",
]


def widen(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to FP32; FP32/FP64 unchanged (no node in an FP32 export)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def mapped_size(n: int) -> int:
    """Size of the query grid along an axis of length ``n``: ceil(n / 2)."""
    return (n + 1) // 2


@functools.lru_cache(maxsize=256)
def _interpolation_matrix_np(n_out: int, n_in: int) -> np.ndarray:
    # Source coordinates in float32 arithmetic, as PyTorch's kernel computes them: the matrix
    # then matches F.interpolate to ~1e-7 instead of ~1e-5.
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0.0)
    for i in range(n_out):
        src = float(np.float32(scale * np.float32(i)))
        lo = min(math.floor(src), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        weights[i, lo] += 1.0 - frac
        weights[i, hi] += frac
    weights.setflags(write=False)
    return weights


@torch.compiler.disable  # torch.compile: build this constant eagerly instead of tracing numpy
def interpolation_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) matrix M with ``M @ v`` = 1-D linear resize of v, align_corners=True.

    Bilinear resizing is separable: ``Mh @ X @ Mw.T`` equals
    ``F.interpolate(X, (h, w), mode="bilinear", align_corners=True)``.
    """
    return torch.from_numpy(_interpolation_matrix_np(n_out, n_in).astype(np.float32))


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear align_corners resize of the last two axes as two constant matrix products."""
    rows = interpolation_matrix(height, x.shape[-2]).to(x.device, x.dtype)
    cols_t = interpolation_matrix(width, x.shape[-1]).to(x.device, x.dtype).t()
    return rows @ x @ cols_t


class _AxisAttention(nn.Module):
    """Shared parts of the horizontal and vertical attention; subclasses pick the axis."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        reduced = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, reduced, 1, bias=False)
        self.key = nn.Conv2d(channels, reduced, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        # Set by validation to see the largest energy (FP16 headroom); None in normal use.
        self.energy_observer: Callable[[torch.Tensor], None] | None = None

    def _projections(self, x: torch.Tensor, value_axis: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mapped queries, keys, and the value means over ``value_axis`` as (B, 1, L, C)."""
        height, width = x.shape[-2:]
        # q and k feed the energies, whose softmax amplifies any error by the energy's size
        # (hundreds to 10^4): their projections run in FP32 too.
        wide = widen(x)
        q = self.query(wide.to(self.query.weight.dtype))
        k = self.key(wide.to(self.key.weight.dtype))
        # The 1x1 value projection is linear, so mean(value(x)) = value(mean(x)): averaging
        # first cuts its cost by the averaged axis' length (the spec's order costs ~5% of the
        # model's MACs for the same numbers).
        x_mean = wide.mean(dim=value_axis, keepdim=True).to(self.value.weight.dtype)
        value_mean = widen(self.value(x_mean)).permute(0, value_axis, 5 - value_axis, 1)
        return _resize(q, mapped_size(height), mapped_size(width)), k, value_mean

    def _attend(
        self,
        x: torch.Tensor,
        energy: torch.Tensor,
        value_mean: torch.Tensor,
        order: tuple[int, ...],
        scale: nn.Parameter,
    ) -> torch.Tensor:
        """Softmax over the last axis, weigh the value means, permute back to (B, C, Hm, Wm)
        by ``order``, unmap to x's size and add the residual."""
        if self.energy_observer is not None:
            self.energy_observer(energy)
        context = (energy.softmax(dim=-1) @ value_mean).permute(*order)
        out = widen(x) + scale * _resize(context, x.shape[-2], x.shape[-1])
        return out.to(x.dtype)


class HorizontalAttention(_AxisAttention):
    """Each mapped query (i, j) attends over the W positions of key row 2i."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__(channels, reduction)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qm, k, value_mean = self._projections(x, value_axis=2)
        key_rows = k[:, :, 0::2, :]
        # e[b, i, j, w] = sum_c qm[b, c, i, j] * key_rows[b, c, i, w]
        energy = qm.permute(0, 2, 3, 1) @ key_rows.permute(0, 2, 1, 3)
        return self._attend(x, energy, value_mean, (0, 3, 1, 2), self.alpha)


class VerticalAttention(_AxisAttention):
    """Each mapped query (i, j) attends over the H positions of key column 2j."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__(channels, reduction)
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qm, k, value_mean = self._projections(x, value_axis=3)
        key_cols = k[:, :, :, 0::2]
        # e[b, j, i, h] = sum_c qm[b, c, i, j] * key_cols[b, c, h, j]
        energy = qm.permute(0, 3, 2, 1) @ key_cols.permute(0, 3, 1, 2)
        return self._attend(x, energy, value_mean, (0, 3, 2, 1), self.beta)


class LocalAttention(nn.Module):
    """Three 3x3 conv-BN-ReLU, a softmax over the H*W positions of each channel, times x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, height, width = x.shape[1:]
        features = widen(self.convs(x))
        # -1 keeps the batch symbolic without a computed shape in the exported graph.
        attention = features.reshape(-1, channels, height * width).softmax(dim=-1)
        return attention.reshape(-1, channels, height, width) * widen(x)


class GlobalLocalAttention(nn.Module):
    """``y = va(ha(x)) + gamma * la(x)``: the residual x lives inside ha and va."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.ha = HorizontalAttention(channels, reduction)
        self.va = VerticalAttention(channels, reduction)
        self.la = LocalAttention(channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = widen(self.va(self.ha(x))) + self.gamma * self.la(x)
        return out.to(x.dtype)


@contextlib.contextmanager
def observe_attention_energy(model: nn.Module) -> Iterator[list[float]]:
    """Collect the largest |energy| each HVA softmax sees while the block runs."""
    seen: list[float] = [0.0]
    modules = [m for m in model.modules() if isinstance(m, _AxisAttention)]
    for module in modules:
        module.energy_observer = lambda e: seen.append(float(e.abs().max()))
    try:
        yield seen
    finally:
        for module in modules:
            module.energy_observer = None
