"""HVA: the spec's loop form (tests/reference.py) vs the package's vectorised form.

Per stage size of the full model (C, H=W): latency of one horizontal + vertical attention, and
the ONNX node count of that HVA exported both ways. Run: python benchmarks/hva_loop_vs_vectorized.py
"""

from __future__ import annotations

import argparse
import collections
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reference

from benchmarks.common import commit, machine, time_call, write_json
from dgla_export.models.attention import GlobalLocalAttention

STAGES = [("layer1", 64, 56), ("layer2", 128, 28), ("layer3", 256, 14), ("layer4", 512, 7), ("odd", 64, 9)]


class VectorHVA(nn.Module):
    """The package's HVA: horizontal then vertical attention (GLA's global branch)."""

    def __init__(self, gla: GlobalLocalAttention) -> None:
        super().__init__()
        self.gla = gla

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gla.va(self.gla.ha(x))


class LoopHVA(VectorHVA):
    """The spec's loop form (tests/reference.py) with the same weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ha, va = self.gla.ha, self.gla.va
        h = reference.horizontal_loop(x, ha.query.weight, ha.key.weight, ha.value.weight, ha.alpha)
        return reference.vertical_loop(h, va.query.weight, va.key.weight, va.value.weight, va.beta)


def onnx_nodes(module: nn.Module, x: torch.Tensor) -> collections.Counter:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=18, external_data=False)
        return collections.Counter(node.op_type for node in program.model_proto.graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--output", default=None, help="results file name (default hva_<device>.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for stage, channels, size in STAGES:
        gla = GlobalLocalAttention(channels).eval()
        generator = torch.Generator().manual_seed(channels + size)
        with torch.no_grad():
            for p in gla.parameters():  # weights of a trained scale: energies of O(10)
                scale = 0.5 if p.numel() == 1 else channels**-0.5
                p.copy_(torch.randn(p.shape, generator=generator) * scale)
        vector, loop = VectorHVA(gla).eval(), LoopHVA(gla).eval()
        x = torch.randn(args.batch, channels, size, size)
        with torch.no_grad():
            expected = loop(x)
            err = ((vector(x) - expected).abs().max() / expected.abs().max()).item()
            contribution = ((expected - x).abs().max() / x.abs().max()).item()
        gla_d, loop_d, x_d = vector.to(device), loop.to(device), x.to(device)
        with torch.no_grad():
            t_vec = time_call(lambda m=gla_d, x=x_d: m(x), sync=sync)
            t_loop = time_call(lambda m=loop_d, x=x_d: m(x), sync=sync)
        row = {
            "stage": stage,
            "channels": channels,
            "size": size,
            "max_rel_diff": err,
            "hva_contribution_rel": contribution,
            "vectorized_ms": t_vec["p50_ms"],
            "loop_ms": t_loop["p50_ms"],
            "speedup": t_loop["p50_ms"] / t_vec["p50_ms"],
        }
        if stage in ("layer1", "odd"):
            vec_nodes, loop_nodes = onnx_nodes(vector.cpu(), x), onnx_nodes(loop.cpu(), x)
            row["onnx_nodes_vectorized"] = sum(vec_nodes.values())
            row["onnx_nodes_loop"] = sum(loop_nodes.values())
            row["onnx_ops_loop"] = dict(loop_nodes.most_common(6))
        rows.append(row)
        print(
            f"{stage:7s} C={channels:4d} {size:3d}x{size:<3d} vectorised {t_vec['p50_ms']:8.2f} ms"
            f"  loop {t_loop['p50_ms']:8.2f} ms  x{row['speedup']:5.1f}  rel diff {err:.1e}"
            + (
                f"  ONNX nodes {row['onnx_nodes_vectorized']} vs {row['onnx_nodes_loop']}"
                if "onnx_nodes_loop" in row
                else ""
            )
        )
    path = write_json(
        args.output or f"hva_{device.type}.json",
        {
            "benchmark": "hva_loop_vs_vectorized",
            "device": str(device),
            "batch": args.batch,
            "machine": machine(),
            "commit": commit(),
            "rows": rows,
        },
    )
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
